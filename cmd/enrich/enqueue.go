package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/enrich-dev/enrich/greenapi"
	phonenum "github.com/enrich-dev/enrich/phone"
	"github.com/enrich-dev/enrich/store"
)

// enqueueReport is what enqueue counts; cmdEnqueue prints it.
type enqueueReport struct {
	Inserted, Duplicates, Rejected int64
	// National counts phone numbers that look national (a leading 8 or 0) read without a region,
	// so taken as international digits: the hint to pass --region.
	National int64
}

// rejectedShown is how many rejected lines a report lists; the rest are only counted, so a file
// of garbage cannot flood a terminal or a JSON consumer.
const rejectedShown = 1000

// inputShown is how much of a rejected input a report repeats.
const inputShown = 200

// Input formats of --format.
const (
	formatAuto  = "auto"
	formatLines = "lines"
	formatCSV   = "csv"
	formatJSONL = "jsonl"
)

// enqueueOptions says how enqueue reads its input.
type enqueueOptions struct {
	// Format is auto, lines, csv or jsonl ("" is auto).
	Format string
	// Column is the CSV column: a 1-based index or a header name ("" picks one).
	Column string
	// Field is the JSONL field ("" picks one).
	Field string
	// Region is the ISO 3166 alpha-2 region of national numbers, already checked by
	// checkRegion; "" takes numbers as international digits.
	Region string
}

// rejection is one rejected input line, as the JSON report lists it.
type rejection struct {
	Line   int64  `json:"line"`
	Input  string `json:"input"`
	Reason string `json:"reason"`
}

// rejectLog reports rejected lines: as `name:line: rejected: why` lines on w, or, with w nil,
// kept for the JSON report; at most rejectedShown of them, the rest counted.
type rejectLog struct {
	w     io.Writer
	name  string
	n     int         // lines shown
	shown []rejection // kept for JSON (w nil)
	more  int64       // lines not shown
	// file, when set (--rejects), gets every rejected line, uncut, under a "# name:line:
	// reason" comment: a lines file to fix and enqueue again.
	file *bufio.Writer
}

// add reports one rejected line.
func (l *rejectLog) add(line int64, input string, err error) {
	if l.file != nil {
		fmt.Fprintf(l.file, "# %s:%d: %s\n%s\n", l.name, line, oneLine(err.Error()), oneLine(input))
	}
	if l.n >= rejectedShown {
		l.more++
		return
	}
	if len(input) > inputShown {
		// Cut at a character's start, so the report never shows half of one.
		cut := inputShown
		for cut > 0 && !utf8.RuneStart(input[cut]) {
			cut--
		}
		input = input[:cut] + "…"
	}
	l.n++
	r := rejection{Line: line, Input: input, Reason: err.Error()}
	if l.w != nil {
		fmt.Fprintf(l.w, "%s:%d: rejected: %s\n", l.name, line, r.Reason)
		return
	}
	l.shown = append(l.shown, r)
}

// oneLine keeps a rejected value on one line of the rejects file (a quoted CSV cell may hold
// newlines).
func oneLine(s string) string {
	return strings.NewReplacer("\r\n", " ", "\n", " ", "\r", " ").Replace(s)
}

// maxRejected is --max-rejected: at most N lines, or at most P percent of the values read.
type maxRejected struct {
	set     bool
	n       int64
	percent float64
	text    string
}

// parseMaxRejected reads "N" or "P%".
func parseMaxRejected(s string) (maxRejected, error) {
	if s == "" {
		return maxRejected{}, nil
	}
	m := maxRejected{set: true, text: s}
	bad := configErrorf("--max-rejected %q: give a number of lines (e.g. 10) or a percentage of the lines read (e.g. 0.5%%)", s)
	if p, ok := strings.CutSuffix(s, "%"); ok {
		v, err := strconv.ParseFloat(p, 64)
		if err != nil || v < 0 || v > 100 || v != v {
			return m, bad
		}
		m.percent = v
		return m, nil
	}
	v, err := strconv.ParseInt(s, 10, 64)
	if err != nil || v < 0 {
		return m, bad
	}
	m.n, m.percent = v, -1
	return m, nil
}

// exceeded says whether rejected of read values is more than allowed.
func (m maxRejected) exceeded(rejected, read int64) bool {
	switch {
	case !m.set:
		return false
	case m.percent < 0:
		return rejected > m.n
	}
	return float64(rejected)*100 > m.percent*float64(read)
}

// finish writes the count of the lines not shown.
func (l *rejectLog) finish() {
	if l.w != nil && l.more > 0 {
		fmt.Fprintf(l.w, "%s: %d more rejected lines not shown (only the first %d are)\n", l.name, l.more, rejectedShown)
	}
}

func cmdEnqueue(ctx context.Context, a *app, args []string) (err error) {
	f := newFlags(a, "enqueue", "enqueue [flags] [FILE|-]\n\n"+
		"Reads phone numbers or chatIds from FILE or - (stdin, the default): one per line (blank lines and "+
		"lines starting with # are skipped), a CSV column, or a JSONL field. Phone numbers may carry +, spaces "+
		"(no-break ones too), dashes (Unicode ones too), dots and parentheses. Without --region they are taken as "+
		"international digits, 10 to 15 of them, country code first (+49 (0) 30 1234567 is 49301234567). With "+
		"--region (or [input] region) they must be valid numbers of their country: read as dialled in that region "+
		"(RU: 8 900 123-45-67 is 79001234567), unless their digits are already a valid international number "+
		"(442079460958 stays as it is); digits valid both ways in two countries (4930123456 in RU) are rejected, "+
		"not moved to another country: write them with + or the trunk prefix (RU 8). Numbers are stored as "+
		"digits; only what cannot be a phone number is rejected, and Green API judges the rest. A phone number "+
		"and its personal chatId (79001234567 and 79001234567@c.us) are one "+
		"target, stored once. Rejected lines are reported with their line numbers and why (the first 1000); "+
		"nothing else is lost, and targets already in the table are counted as duplicates.")
	tableFlag(f)
	key(f, "region", "ISO 3166 region of national numbers, e.g. RU or DE (input.region); empty: international digits only",
		func(c *Config) *string { return &c.Input.Region })
	var opt enqueueOptions
	var report string
	f.StringVar(&opt.Format, "format", formatAuto, "input format: auto (by extension .csv, .jsonl or .ndjson, else by the first line), lines, csv or jsonl")
	f.StringVar(&opt.Column, "column", "", "CSV column: a header name or a 1-based index (default: a column named phone, phone_number, number, msisdn, chat_id or chatId, else the first holding a number)")
	f.StringVar(&opt.Field, "field", "", "JSONL field (default: phone_number, phone, chat_id or chatId, the first present)")
	f.StringVar(&report, "report", "text", "report: text (a summary on stdout, rejected lines on stderr) or json (one JSON object on stdout)")
	dryRun := f.Bool("dry-run", false, "read and check everything and count what would be inserted, duplicates and rejected lines, in a transaction rolled back: nothing is written")
	rejectsPath := f.String("rejects", "", "write every rejected line to this FILE, each under a '# input:line: reason' comment, to fix and enqueue again")
	maxRej := f.String("max-rejected", "", "fail (exit 1) and commit nothing when more than N lines, or more than P% of the lines read, are rejected, e.g. 10 or 0.5%; the whole input is then one transaction")
	f.file = true
	rest, err := f.parse(args, false)
	if err != nil {
		return err
	}
	opt.Region = a.cfg.Input.Region
	if !slices.Contains([]string{formatAuto, formatLines, formatCSV, formatJSONL}, opt.Format) {
		return configErrorf("--format %q: use auto, lines, csv or jsonl", opt.Format)
	}
	if report != "text" && report != "json" {
		return configErrorf("--report %q: use text or json", report)
	}
	limit, err := parseMaxRejected(*maxRej)
	if err != nil {
		return err
	}
	if n, err := strconv.Atoi(opt.Column); err == nil && n < 1 {
		return configErrorf("--column %d: columns are numbered from 1", n)
	}
	// Everything that can be checked is checked before the input is read: the file, the format
	// and the column or field against the first line, the rejects file, then the table.
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
	src, err := newSource(in, name, opt)
	if err != nil {
		return err
	}
	rej := &rejectLog{name: name}
	if report == "text" {
		rej.w = a.io.err
	}
	if *rejectsPath != "" {
		fh, err := os.Create(*rejectsPath)
		if err != nil {
			return configErrorf("--rejects: %v", err)
		}
		defer fh.Close()
		rej.file = bufio.NewWriter(fh)
		defer func() {
			if ferr := rej.file.Flush(); ferr == nil {
				ferr = fh.Close()
			} else if err == nil {
				err = configErrorf("--rejects %s: %v", *rejectsPath, ferr)
			}
		}()
	}
	pool, st, err := a.connectStore(ctx)
	if err != nil {
		return err
	}
	defer pool.Close()
	if err := st.CheckEnqueue(); err != nil {
		return dbErr("enqueue", err)
	}
	if err := st.Check(ctx); err != nil {
		return dbErr("enqueue", err)
	}
	var dst enqueuer = st
	var im *store.Import
	if *dryRun || limit.set {
		if im, err = st.BeginImport(ctx); err != nil {
			return dbErr("enqueue", err)
		}
		defer func() { _ = im.Rollback(context.WithoutCancel(ctx)) }()
		dst = im
	}
	rep, read, err := enqueueFrom(ctx, dst, src, name, opt, rej, limit)
	rej.finish()
	switch {
	case err != nil:
	case limit.exceeded(rep.Rejected, read):
		err = configErrorf("enqueue: %d of %d lines read were rejected, more than --max-rejected %s allows: nothing was written "+
			"(fix them, e.g. from --rejects FILE, and enqueue again, or raise --max-rejected)",
			rep.Rejected, read, limit.text)
	case *dryRun:
	case im != nil:
		if cerr := im.Commit(ctx); cerr != nil {
			err = dbErr("enqueue", cerr)
		}
	}
	// written: the inserted rows are in the table (a dry run, or an import that failed as a
	// whole, wrote none; a chunked one may have written some before an error).
	written := !*dryRun && (err == nil || im == nil)
	if report == "json" {
		out := struct {
			Input        string      `json:"input"`
			Region       string      `json:"region"`
			Inserted     int64       `json:"inserted"`
			Duplicates   int64       `json:"duplicates"`
			RejectedN    int64       `json:"rejected_count"`
			National     int64       `json:"looking_national"`
			Rejected     []rejection `json:"rejected"`
			RejectedMore int64       `json:"rejected_more"`
			Error        string      `json:"error,omitempty"`
			DryRun       bool        `json:"dry_run"`
			Written      bool        `json:"written"`
		}{name, opt.Region, rep.Inserted, rep.Duplicates, rep.Rejected, rep.National, rej.shown, rej.more, "", *dryRun,
			written}
		if out.Rejected == nil {
			out.Rejected = []rejection{}
		}
		if err != nil {
			out.Error = err.Error()
		}
		b, merr := json.Marshal(out)
		if merr != nil {
			return fmt.Errorf("enqueue: write the report: %w", merr)
		}
		fmt.Fprintf(a.io.out, "%s\n", b)
		return err
	}
	line := fmt.Sprintf("inserted %d, duplicates %d, rejected %d", rep.Inserted, rep.Duplicates, rep.Rejected)
	switch {
	case *dryRun:
		line = fmt.Sprintf("dry run, nothing written: would insert %d, duplicates %d, rejected %d", rep.Inserted, rep.Duplicates, rep.Rejected)
	case !written:
		line = fmt.Sprintf("nothing written: would have inserted %d, duplicates %d, rejected %d", rep.Inserted, rep.Duplicates, rep.Rejected)
	}
	if rep.National > 0 {
		line += fmt.Sprintf(" (looking national: %d)", rep.National)
		fmt.Fprintf(a.io.err, "%s: %d phone numbers look national (a leading 8 or 0) and were taken as international "+
			"digits: pass --region (or set [input] region), e.g. --region RU, to read them as numbers dialled in that region\n",
			name, rep.National)
	}
	fmt.Fprintln(a.io.out, line)
	return err
}

// enqueue streams the input into the table in chunks of store.CopyChunkSize (COPY into a
// staging table, then one INSERT), so memory stays flat for any input size. Rejected lines go to
// rej. A read error stops the input with a *configError after the lines before it were enqueued.
func enqueue(ctx context.Context, st enqueuer, in io.Reader, name string, opt enqueueOptions, rej *rejectLog) (enqueueReport, error) {
	src, err := newSource(in, name, opt)
	if err != nil {
		return enqueueReport{}, err
	}
	rep, _, err := enqueueFrom(ctx, st, src, name, opt, rej, maxRejected{})
	return rep, err
}

// enqueuer is where enqueue writes: the store (a transaction a chunk) or an import (one
// transaction for the whole input).
type enqueuer interface {
	EnqueueCopy(ctx context.Context, cs []store.NewContact) (int64, error)
}

// enqueueFrom is enqueue from a source already made; read counts the values and bad records
// read, inserted or not yet. With limit a number of lines, it stops reading once more than that
// many were rejected (the caller commits nothing then).
func enqueueFrom(ctx context.Context, st enqueuer, src source, name string, opt enqueueOptions, rej *rejectLog,
	limit maxRejected) (rep enqueueReport, read int64, err error) {
	batch := make([]store.NewContact, 0, store.CopyChunkSize)
	flush := func() error {
		if len(batch) == 0 {
			return nil
		}
		n, err := st.EnqueueCopy(ctx, batch)
		if err != nil {
			return dbErr("enqueue", err)
		}
		rep.Inserted += n
		rep.Duplicates += int64(len(batch)) - n
		batch = batch[:0]
		return nil
	}
	for {
		if limit.set && limit.percent < 0 && rep.Rejected > limit.n {
			return rep, read, nil // the caller says so, and commits nothing
		}
		line, text, err := src.next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err == nil || errors.As(err, new(*badRecord)) {
			read++
		}
		var bad *badRecord
		switch {
		case errors.As(err, &bad):
			rep.Rejected++
			rej.add(line, text, bad.err)
			continue
		case err != nil:
			if ferr := flush(); ferr != nil {
				return rep, read, ferr
			}
			return rep, read, configErrorf("read %s: %v (the lines before it were enqueued)", name, err)
		}
		c, national, err := normalize(text, opt.Region)
		if national {
			rep.National++
		}
		if err != nil {
			rep.Rejected++
			rej.add(line, text, err)
			continue
		}
		if batch = append(batch, c); len(batch) == cap(batch) {
			if err := flush(); err != nil {
				return rep, read, err
			}
		}
	}
	return rep, read, flush()
}

// checkRegion validates an [input] region (see phonenum.CheckRegion).
func checkRegion(region string) (string, error) { return phonenum.CheckRegion(region) }

// normalize turns one input value into a contact: a chatId as given, a phone number as digits in
// international format (see phonenum.Normalize, which also says when national is reported).
func normalize(s, region string) (c store.NewContact, national bool, err error) {
	t, national, err := phonenum.Normalize(s, region)
	switch {
	case err != nil:
		return c, national, err
	case t.Kind() == greenapi.KindPhone:
		return store.NewContact{PhoneNumber: t.String()}, national, nil
	}
	return store.NewContact{ChatID: t.String()}, national, nil
}

// badRecord is a record that cannot be read as a value (a missing column or field, a line that
// is not JSON): it is rejected and the input goes on.
type badRecord struct{ err error }

func (b *badRecord) Error() string { return b.err.Error() }

// source yields the input's values one by one with their line numbers: io.EOF at the end, a
// *badRecord for a record to reject, any other error to stop at.
type source interface {
	next() (line int64, value string, err error)
}

// maxLine is the longest line (or CSV record) read; a longer one stops the input.
const maxLine = 1 << 20

// newSource picks the reader for opt.Format, sniffing the first line for auto.
func newSource(in io.Reader, name string, opt enqueueOptions) (source, error) {
	br := bufio.NewReaderSize(in, 64<<10)
	// The byte-order mark spreadsheets write.
	if b, err := br.Peek(3); err == nil && string(b) == "\ufeff" {
		_, _ = br.Discard(3)
	}
	format := opt.Format
	if format == "" || format == formatAuto {
		switch strings.ToLower(filepath.Ext(name)) {
		case ".csv":
			format = formatCSV
		case ".jsonl", ".ndjson":
			format = formatJSONL
		default:
			format = sniffFormat(firstLine(br))
		}
	}
	if opt.Column != "" && format != formatCSV {
		return nil, configErrorf("--column is for CSV input, and %s is read as %s: pass --format csv, or drop --column", name, format)
	}
	if opt.Field != "" && format != formatJSONL {
		return nil, configErrorf("--field is for JSONL input, and %s is read as %s: pass --format jsonl, or drop --field", name, format)
	}
	if err := checkFirstLine(firstLine(br), name, format, opt); err != nil {
		return nil, err
	}
	switch format {
	case formatCSV:
		return newCSVSource(&lineLimit{r: br}, firstLine(br), opt.Column), nil
	case formatJSONL:
		return newJSONLSource(br, opt.Field), nil
	}
	return newLineSource(br), nil
}

// checkFirstLine checks --column and --field against the input's first line, so that a wrong
// one stops enqueue before it reads the input (and before every line is rejected for it): a
// column number past the first row's fields, a column name not in it, a field the first JSON
// object lacks.
func checkFirstLine(first, name, format string, opt enqueueOptions) error {
	if first == "" {
		return nil
	}
	switch {
	case format == formatCSV && opt.Column != "":
		cr := newCSVSource(strings.NewReader(first), first, "").r
		rec, err := cr.Read()
		if err != nil {
			return nil // the record spans lines or does not parse: the reader says so later
		}
		n, err := strconv.Atoi(opt.Column)
		if err == nil && n > len(rec) {
			return configErrorf("--column %d: the first row of %s has %d columns (%q): give a number from 1 to %d, or a column name",
				n, name, len(rec), rec, len(rec))
		}
		if err != nil && !slices.ContainsFunc(rec, func(h string) bool { return strings.EqualFold(strings.TrimSpace(h), opt.Column) }) {
			return configErrorf("--column %q: the first row of %s has no such column (it has %q): name a column of the header, "+
				"or give its number from 1", opt.Column, name, rec)
		}
	case format == formatJSONL && opt.Field != "":
		var obj map[string]json.RawMessage
		if json.Unmarshal([]byte(first), &obj) != nil {
			return nil
		}
		if _, ok := obj[opt.Field]; !ok {
			return configErrorf("--field %q: the first line of %s has no such field (it has %q): give one of its fields",
				opt.Field, name, sortedKeys(obj))
		}
	}
	return nil
}

// firstLine is the input's first non-blank, non-comment line as far as the buffer holds it,
// without consuming anything.
func firstLine(br *bufio.Reader) string {
	b, _ := br.Peek(br.Size())
	for len(b) > 0 {
		line, rest, _ := bytes.Cut(b, []byte("\n"))
		if t := strings.TrimSpace(string(line)); t != "" && !strings.HasPrefix(t, "#") {
			return t
		}
		b = rest
	}
	return ""
}

// sniffFormat guesses the format of input whose name says nothing from its first line: a JSON
// object is JSONL, a line split by commas, semicolons or tabs is CSV, anything else lines.
// A phone number written with tabs ("+7\t900 123") is still one number a line.
func sniffFormat(line string) string {
	switch d := csvDelimiter(line); {
	case strings.HasPrefix(line, "{"):
		return formatJSONL
	case d == 0, d == '\t' && plausibleTarget(line):
		return formatLines
	}
	return formatCSV
}

// csvDelimiter is the commonest of , ; and tab in line, or 0 if it has none.
func csvDelimiter(line string) rune {
	best, n := rune(0), 0
	for _, d := range []rune{',', ';', '\t'} {
		if c := strings.Count(line, string(d)); c > n {
			best, n = d, c
		}
	}
	return best
}

// plausibleTarget reports whether a cell could be a phone number or chatId (so a first row whose
// chosen cell is not one is a header).
func plausibleTarget(s string) bool {
	s = strings.TrimSpace(s)
	if strings.IndexByte(s, '@') >= 0 {
		_, err := greenapi.ParseChatID(s)
		return err == nil
	}
	digits := 0
	for _, r := range s {
		switch {
		case r >= '0' && r <= '9':
			digits++
		case greenapi.IsSeparator(r):
		default:
			return false
		}
	}
	return digits >= 5
}

// lineSource reads one value per line, skipping blank lines and # comments.
type lineSource struct {
	sc   *bufio.Scanner
	line int64
}

func newLineSource(r io.Reader) *lineSource {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), maxLine)
	return &lineSource{sc: sc}
}

func (s *lineSource) next() (int64, string, error) {
	for s.sc.Scan() {
		s.line++
		text := strings.TrimSpace(s.sc.Text())
		if text == "" || strings.HasPrefix(text, "#") {
			continue
		}
		return s.line, text, nil
	}
	if err := s.sc.Err(); err != nil {
		return s.line + 1, "", fmt.Errorf("line %d: %w", s.line+1, err)
	}
	return s.line, "", io.EOF
}

// lineLimit fails a read once a line runs past maxLine bytes, so that encoding/csv, which has no
// limit of its own, holds a bounded record whatever the input.
type lineLimit struct {
	r   io.Reader
	run int // bytes since the last newline
}

func (l *lineLimit) Read(p []byte) (int, error) {
	n, err := l.r.Read(p)
	for _, c := range p[:n] {
		if l.run++; c == '\n' {
			l.run = 0
		} else if l.run > maxLine {
			return 0, fmt.Errorf("a line longer than %d bytes: is this really a CSV file?", maxLine)
		}
	}
	return n, err
}

// csvNames are the header names a CSV column of targets is found by without --column, in
// order of preference (compared case-insensitively).
var csvNames = []string{"phone", "phone_number", "number", "msisdn", "chat_id", "chatid"}

// csvSource reads one column of a CSV file (encoding/csv: quotes, any number of fields per
// record, lazy quotes), the delimiter taken from the first line.
type csvSource struct {
	r      *csv.Reader
	column string // as given
	col    int    // 0-based, -1 until the first record decides
	first  bool
	// pickNext: the first record was a header with no known name, so the next record's first
	// number picks the column.
	pickNext bool
}

func newCSVSource(r io.Reader, first, column string) *csvSource {
	cr := csv.NewReader(r)
	if d := csvDelimiter(first); d != 0 {
		cr.Comma = d
	}
	cr.Comment = '#'
	cr.FieldsPerRecord = -1
	cr.LazyQuotes = true
	cr.ReuseRecord = true
	return &csvSource{r: cr, column: column, col: -1, first: true}
}

func (s *csvSource) next() (int64, string, error) {
	for {
		rec, err := s.r.Read()
		if errors.Is(err, io.EOF) {
			return 0, "", io.EOF
		}
		if err != nil {
			line, _ := s.r.FieldPos(0)
			var pe *csv.ParseError
			if errors.As(err, &pe) {
				line = pe.Line
			}
			return int64(line), "", err
		}
		if s.first {
			s.first = false
			header, err := s.pick(rec)
			if err != nil {
				return 0, "", err
			}
			if header {
				continue
			}
		}
		if s.pickNext {
			s.pickNext = false
			s.col = max(slices.IndexFunc(rec, plausibleTarget), 0)
		}
		line, _ := s.r.FieldPos(0)
		if s.col >= len(rec) {
			if len(rec) == 1 && strings.TrimSpace(rec[0]) == "" {
				continue // a line of spaces
			}
			return int64(line), strings.Join(rec, string(s.r.Comma)),
				&badRecord{fmt.Errorf("the record has %d fields and the column is number %d", len(rec), s.col+1)}
		}
		line, _ = s.r.FieldPos(s.col)
		v := strings.TrimSpace(rec[s.col])
		if v == "" {
			return int64(line), "", &badRecord{fmt.Errorf("column %d is empty", s.col+1)}
		}
		return int64(line), v, nil
	}
}

// pick chooses the column from the first record and says whether that record is a header: with
// --column NAME, it is one and must hold NAME; with --column INDEX, or by default, it is one when
// its cell in the column is not a plausible number. By default the column is the first whose
// header is one of csvNames, else the first holding a plausible number (in the first record, or
// in the second when the first is a header), else the first.
func (s *csvSource) pick(rec []string) (header bool, err error) {
	find := func(names ...string) int {
		for _, n := range names {
			for i, h := range rec {
				if strings.EqualFold(strings.TrimSpace(h), n) {
					return i
				}
			}
		}
		return -1
	}
	switch n, err := strconv.Atoi(s.column); {
	case s.column == "":
		if s.col = find(csvNames...); s.col >= 0 {
			return true, nil
		}
		if s.col = slices.IndexFunc(rec, plausibleTarget); s.col >= 0 {
			return false, nil
		}
		// A header without a known name: the column is the first data record's first
		// number.
		s.col, s.pickNext = 0, true
		return true, nil
	case err == nil:
		if n < 1 {
			return false, configErrorf("--column %d: columns are numbered from 1", n)
		}
		s.col = n - 1
	default:
		if s.col = find(s.column); s.col < 0 {
			return false, configErrorf("--column %q: the first row has no such column (it has %q): name a column of the header, "+
				"or give its number from 1", s.column, rec)
		}
		return true, nil
	}
	return s.col < len(rec) && !plausibleTarget(rec[s.col]), nil
}

// jsonlNames are the fields a JSONL line's target is found in without --field, the first
// present wins.
var jsonlNames = []string{"phone_number", "phone", "chat_id", "chatId"}

// jsonlSource reads one field of each line holding a JSON object.
type jsonlSource struct {
	lines *lineSource
	field string
}

func newJSONLSource(r io.Reader, field string) *jsonlSource {
	return &jsonlSource{lines: newLineSource(r), field: field}
}

func (s *jsonlSource) next() (int64, string, error) {
	line, text, err := s.lines.next()
	if err != nil {
		return line, text, err
	}
	var obj map[string]json.RawMessage
	if err := json.Unmarshal([]byte(text), &obj); err != nil {
		return line, text, &badRecord{fmt.Errorf("not a JSON object: %v", err)}
	}
	names := jsonlNames
	if s.field != "" {
		names = []string{s.field}
	}
	for _, n := range names {
		raw, ok := obj[n]
		if !ok {
			continue
		}
		var str string
		if json.Unmarshal(raw, &str) == nil {
			return line, str, nil
		}
		var num json.Number
		if json.Unmarshal(raw, &num) == nil {
			return line, num.String(), nil
		}
		return line, text, &badRecord{fmt.Errorf("field %q is %s, not a string or a number", n, raw)}
	}
	return line, text, &badRecord{fmt.Errorf("no field %s", strings.Join(quoteAll(names), " or "))}
}

// quoteAll quotes each name, for messages.
func quoteAll(names []string) []string {
	out := make([]string, len(names))
	for i, n := range names {
		out[i] = strconv.Quote(n)
	}
	return out
}
