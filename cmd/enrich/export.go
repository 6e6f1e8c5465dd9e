package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/enrich-dev/enrich/store"
)

// sinceFlag is --since: a time (RFC 3339, or a date meaning its midnight UTC) or an age ("24h",
// "7d") meaning that long before the export starts, by the database's clock.
type sinceFlag struct {
	at  time.Time
	age time.Duration
}

func (s *sinceFlag) String() string {
	switch {
	case s == nil:
		return ""
	case s.age != 0:
		return s.age.String()
	case !s.at.IsZero():
		return s.at.Format(time.RFC3339Nano)
	}
	return ""
}

func (s *sinceFlag) Set(v string) error {
	*s = sinceFlag{}
	if t, err := time.Parse(time.RFC3339Nano, v); err == nil {
		s.at = t
		return nil
	}
	if t, err := time.Parse(time.DateOnly, v); err == nil {
		s.at = t
		return nil
	}
	d, err := parseAge(v)
	if err != nil {
		return fmt.Errorf("%q is neither a time such as 2026-01-02T15:04:05Z or 2026-01-02 nor an age such as 24h or 7d", v)
	}
	if d <= 0 {
		return fmt.Errorf("%q: an age must be positive, such as 24h or 7d", v)
	}
	s.age = d
	return nil
}

func cmdExport(ctx context.Context, a *app, args []string) error {
	f := newFlags(a, "export", "export [--format csv|jsonl] [--status done|failed|pending|all] [--since TIME] [--output FILE] [flags]\n\n"+
		"Writes the table's rows in id order: id, phone_number, chat_id, status, exists_whatsapp, avatar_available,\n"+
		"url_avatar, reason, attempts, checked_at, updated_at. CSV has a header row; NULL is an empty field (JSONL\n"+
		"has null), booleans are true/false, times RFC 3339 in UTC. The rows stream through a server-side cursor in\n"+
		"one read-only snapshot, so memory stays flat at any table size and the file is the table at one instant.\n"+
		"With --output the file appears only once complete (a failed export leaves no file, or the old one).\n"+
		"It prints \"exported N rows to FILE; M done with existence unknown\" on stderr (M: done personal rows\n"+
		"whose exists_whatsapp is NULL until a later run checks them, as enrich status counts).")
	tableFlag(f)
	format := f.String("format", store.FormatCSV, "csv or jsonl")
	status := f.String("status", store.StatusDone, "which rows: done, failed, pending or all")
	var since sinceFlag
	f.Var(&since, "since", "only rows checked at or after `TIME` (their checked_at, or updated_at for a row never checked): "+
		"an RFC 3339 time (2026-01-02T15:04:05Z), a date (2026-01-02, midnight UTC), or an age (24h, 7d: that long "+
		"before now, by the database's clock); default any time")
	output := f.String("output", "-", "write to `FILE` (created 0600, as it holds phone numbers), or - for stdout")
	if _, err := f.parse(args, false); err != nil {
		return err
	}
	switch *format {
	case store.FormatCSV, store.FormatJSONL:
	default:
		return configErrorf("--format %q: use --format csv or --format jsonl", *format)
	}
	filter := store.ExportFilter{Format: *format, Status: *status, Since: since.at, Within: since.age}
	switch *status {
	case store.StatusDone, store.StatusFailed, store.StatusPending:
	case "all":
		filter.Status = ""
	default:
		return configErrorf("--status %q: use --status done, failed, pending or all", *status)
	}
	if *output == "" {
		return configErrorf("--output is empty: give a FILE, or - (the default) for stdout")
	}
	// The output is created before connecting: a wrong path is a usage error, found without the
	// database.
	var out io.Writer = a.io.out
	name := "stdout"
	var file *atomicFile
	if *output != "-" {
		var err error
		if file, err = createAtomic(*output); err != nil {
			return configErrorf("--output: %v", err)
		}
		defer file.abort()
		out, name = file, *output
	}
	n, unknown, err := a.export(ctx, out, file, filter)
	switch {
	case err == nil:
		fmt.Fprintf(a.io.err, "exported %d rows to %s; %d done with existence unknown (exists_whatsapp NULL until a check)\n",
			n, name, unknown)
		return nil
	case ctx.Err() != nil:
		err = fmt.Errorf("export stopped after %d rows: %w", n, context.Cause(ctx))
	case errors.As(err, new(*store.ExportWriteError)), file != nil && file.failed:
		err = fmt.Errorf("write %s after %d rows: %w", name, n, err)
	}
	if file != nil {
		return fmt.Errorf("%w (%s was not written)", err, name)
	}
	return err
}

// export connects, writes the rows to out and, when the output is a file, puts it in place. It
// returns the rows written, and of them those whose existence is unknown.
func (a *app) export(ctx context.Context, out io.Writer, file *atomicFile, filter store.ExportFilter) (int64, int64, error) {
	pool, st, err := a.connectStore(ctx)
	if err != nil {
		return 0, 0, err
	}
	defer pool.Close()
	c, err := st.ExportCounted(ctx, out, filter)
	n := c.Rows
	var we *store.ExportWriteError
	switch {
	case err != nil && !errors.As(err, &we):
		return n, c.ExistsUnknown, dbErr(fmt.Sprintf("export after %d rows", n), err)
	case err != nil:
		return n, c.ExistsUnknown, err
	case file != nil:
		return n, c.ExistsUnknown, file.commit()
	}
	return n, c.ExistsUnknown, nil
}

// atomicFile is an output file written under a temporary name beside it and renamed into place
// only once complete, so that a reader (or the next step of a pipeline) never sees half an export,
// and a failed one leaves the previous file as it was.
type atomicFile struct {
	*os.File
	path string
	// failed says writing or closing the temporary file failed: the error is the output's.
	failed bool
	done   bool
}

// createAtomic opens path's temporary file: path.*.tmp in the same directory (a rename across
// file systems would not be atomic), unique so that two exports never share one.
func createAtomic(path string) (*atomicFile, error) {
	dir, base := filepath.Split(path)
	if dir == "" {
		dir = "."
	}
	if fi, err := os.Stat(path); err == nil && fi.IsDir() {
		return nil, fmt.Errorf("%s is a directory: name a file in it", path)
	}
	f, err := os.CreateTemp(dir, base+".*.tmp")
	if err != nil {
		return nil, fmt.Errorf("create %s: %w", path, err)
	}
	return &atomicFile{File: f, path: path}, nil
}

func (f *atomicFile) Write(p []byte) (int, error) {
	n, err := f.File.Write(p)
	if err != nil {
		f.failed = true
	}
	return n, err
}

// commit syncs, closes and renames the temporary file into place.
func (f *atomicFile) commit() error {
	err := f.Sync()
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		f.failed = true
		return fmt.Errorf("write %s: %w", f.Name(), err)
	}
	if err := os.Rename(f.Name(), f.path); err != nil {
		f.failed = true
		return fmt.Errorf("rename %s to %s: %w", f.Name(), f.path, err)
	}
	f.done = true
	return nil
}

// abort removes the temporary file unless commit renamed it.
func (f *atomicFile) abort() {
	if f.done {
		return
	}
	_ = f.Close()
	_ = os.Remove(f.Name())
}
