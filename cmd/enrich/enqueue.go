package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/enrich-dev/enrich/greenapi"
	"github.com/enrich-dev/enrich/store"
)

// enqueueReport is what enqueue prints.
type enqueueReport struct {
	Inserted, Duplicates, Rejected int64
}

func cmdEnqueue(ctx context.Context, a *app, args []string) error {
	f := newFlags(a, "enqueue", "enqueue [flags] [FILE|-]\n\nReads one phone number or chatId per line "+
		"(blank lines and lines starting with # are skipped). Phone numbers may carry +, spaces, dashes, dots "+
		"and parentheses; they are stored as 11 or 12 digits. Rejected lines are reported with their line "+
		"numbers and nothing else is lost. Numbers already in the table are skipped.")
	tableFlag(f)
	f.file = true
	rest, err := f.parse(args, false)
	if err != nil {
		return err
	}
	// The file is opened before connecting: a wrong path is a usage error, found without the
	// database.
	var in io.Reader = a.io.in
	name := "stdin"
	if len(rest) == 1 && rest[0] != "-" {
		fh, err := os.Open(rest[0])
		if err != nil {
			return configErrorf("enqueue: %v", err)
		}
		defer fh.Close()
		in, name = fh, rest[0]
	}
	pool, st, err := a.connectStore(ctx)
	if err != nil {
		return err
	}
	defer pool.Close()
	rep, err := enqueue(ctx, st, in, name, a.io.err)
	fmt.Fprintf(a.io.out, "inserted %d, duplicates %d, rejected %d\n", rep.Inserted, rep.Duplicates, rep.Rejected)
	return err
}

// enqueue streams lines into the table in chunks, so memory stays flat for any input size.
func enqueue(ctx context.Context, st *store.Store, in io.Reader, name string, errw io.Writer) (enqueueReport, error) {
	var rep enqueueReport
	batch := make([]store.NewContact, 0, store.ChunkSize)
	flush := func() error {
		if len(batch) == 0 {
			return nil
		}
		n, err := st.Enqueue(ctx, batch)
		if err != nil {
			return dbErr("enqueue", err)
		}
		rep.Inserted += n
		rep.Duplicates += int64(len(batch)) - n
		batch = batch[:0]
		return nil
	}
	sc := bufio.NewScanner(in)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for line := 1; sc.Scan(); line++ {
		text := sc.Text()
		if line == 1 {
			text = strings.TrimPrefix(text, "\ufeff") // the byte-order mark spreadsheets write
		}
		text = strings.TrimSpace(text)
		if text == "" || strings.HasPrefix(text, "#") {
			continue
		}
		t, err := greenapi.ParseTarget(text)
		if err != nil {
			rep.Rejected++
			fmt.Fprintf(errw, "%s:%d: rejected: %v\n", name, line, err)
			continue
		}
		c := store.NewContact{PhoneNumber: t.String()}
		if t.Kind() != greenapi.KindPhone {
			c = store.NewContact{ChatID: t.String()}
		}
		if batch = append(batch, c); len(batch) == cap(batch) {
			if err := flush(); err != nil {
				return rep, err
			}
		}
	}
	if err := sc.Err(); err != nil {
		if ferr := flush(); ferr != nil {
			return rep, ferr
		}
		return rep, configErrorf("read %s: %v (lines before it were enqueued)", name, err)
	}
	return rep, flush()
}
