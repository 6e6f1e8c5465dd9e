package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"syscall"
	"testing"

	"github.com/enrich-dev/enrich/internal/pgtest"
	"github.com/enrich-dev/enrich/store"
)

// TestNormalize: the messy forms people write numbers in, with and without a region.
func TestNormalize(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in, region string
		want       store.NewContact // zero: rejected
		wantErr    string           // in the rejection's reason
		national   bool
	}{
		// With a region: national forms become international digits.
		{in: "8 900 123 45 67", region: "RU", want: store.NewContact{PhoneNumber: "79001234567"}},
		{in: "8 (900) 123-45-67", region: "RU", want: store.NewContact{PhoneNumber: "79001234567"}},
		{in: "89001234567", region: "RU", want: store.NewContact{PhoneNumber: "79001234567"}},
		{in: "(900) 123-45-67", region: "RU", want: store.NewContact{PhoneNumber: "79001234567"}},
		{in: "+7 900 123-45-67", region: "RU", want: store.NewContact{PhoneNumber: "79001234567"}},
		{in: "7.900.123.45.67", region: "RU", want: store.NewContact{PhoneNumber: "79001234567"}},
		{in: "  +7\t900 123 45 67 ", region: "RU", want: store.NewContact{PhoneNumber: "79001234567"}},
		{in: "8-800-555-35-35", region: "RU", want: store.NewContact{PhoneNumber: "78005553535"}},
		// The (0) trunk prefix of an international number is dropped, whatever the region.
		{in: "+49 (0) 30 1234567", region: "RU", want: store.NewContact{PhoneNumber: "49301234567"}},
		{in: "+49 (0) 30 1234567", region: "DE", want: store.NewContact{PhoneNumber: "49301234567"}},
		{in: "030 1234567", region: "DE", want: store.NewContact{PhoneNumber: "49301234567"}},
		{in: "+44 (0) 20 7946 0958", region: "RU", want: store.NewContact{PhoneNumber: "442079460958"}},
		{in: "020 7946 0958", region: "GB", want: store.NewContact{PhoneNumber: "442079460958"}},
		{in: "+1 (212) 555-0100", region: "RU", want: store.NewContact{PhoneNumber: "12125550100"}},
		// A valid number Green API cannot take: 10 digits in international format.
		{in: "+49 (0) 30 123456", region: "DE", wantErr: "Green API takes 11 or 12 digits"},
		// Invalid for its country, or not a number at all.
		{in: "8 (900) 123-45-6", region: "RU", wantErr: "not a valid number"},
		{in: "123", region: "RU", wantErr: "not a valid number"},
		{in: "hello", region: "RU", wantErr: "unexpected character"},
		{in: "+7 900 123 45 6x", region: "RU", wantErr: "unexpected character 'x'"},
		{in: "8 900 123 45 67 ext. 5", region: "RU", wantErr: "unexpected character"},
		// chatIds are taken as given, with or without a region.
		{in: "79001234567@c.us", region: "RU", want: store.NewContact{ChatID: "79001234567@c.us"}},
		{in: "79001234567-1581234048@g.us", want: store.NewContact{ChatID: "79001234567-1581234048@g.us"}},
		{in: "79001234567@c.uss", region: "RU", wantErr: "@c.us or @g.us"},
		// Without a region: international digits, and national-looking numbers are flagged.
		{in: "+7 (900) 123-45-67", want: store.NewContact{PhoneNumber: "79001234567"}},
		{in: "8 900 123 45 67", want: store.NewContact{PhoneNumber: "89001234567"}, national: true},
		{in: "0 30 123456", wantErr: "9 digits", national: true},
		{in: "+49 (0) 30 123456", want: store.NewContact{PhoneNumber: "49030123456"}},
		{in: "12345", wantErr: "5 digits"},
	}
	for _, tt := range tests {
		t.Run(tt.region+" "+tt.in, func(t *testing.T) {
			t.Parallel()
			got, national, err := normalize(tt.in, tt.region)
			switch {
			case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
				t.Errorf("normalize(%q, %q) = %+v, %v; want an error containing %q", tt.in, tt.region, got, err, tt.wantErr)
			case tt.wantErr == "" && (err != nil || got != tt.want):
				t.Errorf("normalize(%q, %q) = %+v, %v; want %+v", tt.in, tt.region, got, err, tt.want)
			}
			if national != tt.national {
				t.Errorf("normalize(%q, %q): looks national %v, want %v", tt.in, tt.region, national, tt.national)
			}
		})
	}
}

// TestCheckRegion: [input] region takes ISO 3166 alpha-2 codes in any case, and "" for none.
func TestCheckRegion(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{"": "", "RU": "RU", "de": "DE", " gb ": "GB"} {
		if got, err := checkRegion(in); err != nil || got != want {
			t.Errorf("checkRegion(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, in := range []string{"RUS", "XX", "Russia", "7"} {
		if _, err := checkRegion(in); err == nil || !strings.Contains(err.Error(), "ISO 3166") {
			t.Errorf("checkRegion(%q): %v, want an error saying how to write a region", in, err)
		}
	}
	cfg := defaultConfig()
	cfg.Input.Region = "Russia"
	if err := cfg.validate(false); err == nil || !strings.Contains(err.Error(), "input.region") {
		t.Errorf("validate with region Russia: %v, want an error naming input.region", err)
	}
}

// TestEnqueueFormats: CSV (header detection, a name column, delimiters, --column by name or
// index), JSONL (--field or the default names) and sniffing, each with the lines it rejects.
func TestEnqueueFormats(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, file, in string
		opt            enqueueOptions
		want           enqueueReport
		wantRejected   []int // line numbers, in order
		wantRows       []string
	}{
		{
			name: "CSV with a header and a name column",
			file: "crm.csv",
			in:   "name,phone,city\nIvan,8 (900) 123-45-67,Moscow\n\"Petrov, Petr\",+7 900 123 45 68,\"St \"\"P\"\"\"\nAnna,,Kazan\nOleg,not a number,Perm\nNina,79001234569@c.us\n",
			opt:  enqueueOptions{Region: "RU"},
			want: enqueueReport{Inserted: 3, Rejected: 2},
			// Line 4 has an empty phone, line 5 a bad one.
			wantRejected: []int{4, 5},
			wantRows:     []string{phone("79001234567"), phone("79001234568"), chat("79001234569@c.us")},
		},
		{
			name:         "CSV without a header, semicolons, sniffed from the first line",
			file:         "export.txt",
			in:           "\ufeff79001234567;Ivan\n+7 900 123-45-68;Petr\nx;y\n79001234567;again\n",
			want:         enqueueReport{Inserted: 2, Duplicates: 1, Rejected: 1},
			wantRejected: []int{3},
			wantRows:     []string{phone("79001234567"), phone("79001234568")},
		},
		{
			name:     "CSV with an unknown header: the first column holding a number",
			file:     "people.csv",
			in:       "Name,Tel,City\nIvan,+7 900 123-45-67,Moscow\nPetr,79001234568,Perm\n",
			want:     enqueueReport{Inserted: 2},
			wantRows: []string{phone("79001234567"), phone("79001234568")},
		},
		{
			name:     "CSV without a header, the number in the second column",
			file:     "people.csv",
			in:       "Ivan,+7 900 123-45-67\nPetr,79001234568\n",
			want:     enqueueReport{Inserted: 2},
			wantRows: []string{phone("79001234567"), phone("79001234568")},
		},
		{
			name:     "CSV column by index, header detected",
			file:     "list.csv",
			in:       "id\tname\tmsisdn_raw\n1\tIvan\t+79001234567\n2\tPetr\t\"+7 (900) 123-45-68\"\n",
			opt:      enqueueOptions{Column: "3"},
			want:     enqueueReport{Inserted: 2},
			wantRows: []string{phone("79001234567"), phone("79001234568")},
		},
		{
			name:         "CSV column by name, a short record rejected",
			file:         "list.csv",
			in:           "who,Mobile\nIvan,79001234567\nPetr\n",
			opt:          enqueueOptions{Column: "mobile"},
			want:         enqueueReport{Inserted: 1, Rejected: 1},
			wantRejected: []int{3},
			wantRows:     []string{phone("79001234567")},
		},
		{
			name: "JSONL, default fields, numbers and strings",
			file: "dump.jsonl",
			in: `{"phone_number": "8 900 123-45-67", "name": "Ivan"}` + "\n\n" + `{"chatId": "79001234568@c.us"}` + "\n" +
				`{"phone": 79001234569}` + "\n" + `{"name": "nobody"}` + "\n" + `not json` + "\n" + `{"phone": null}` + "\n",
			opt:          enqueueOptions{Region: "RU"},
			want:         enqueueReport{Inserted: 3, Rejected: 3},
			wantRejected: []int{5, 6, 7},
			wantRows:     []string{phone("79001234567"), phone("79001234569"), chat("79001234568@c.us")},
		},
		{
			name:     "JSONL by --field, sniffed",
			file:     "stdin",
			in:       `{"tel": "+7 900 123 45 67", "phone": "ignored"}` + "\n",
			opt:      enqueueOptions{Field: "tel", Format: formatJSONL},
			want:     enqueueReport{Inserted: 1},
			wantRows: []string{phone("79001234567")},
		},
		{
			name:     "the two forms of one number are one row",
			file:     "in.txt",
			in:       "79001234567\n79001234567@c.us\n8 (900) 123-45-67\n",
			opt:      enqueueOptions{Region: "RU"},
			want:     enqueueReport{Inserted: 1, Duplicates: 2},
			wantRows: []string{phone("79001234567")},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			b := setupEnqueue(t)
			var errw bytes.Buffer
			got, err := enqueue(b.ctx, b.st, strings.NewReader(tt.in), tt.file, tt.opt, &rejectLog{w: &errw, name: tt.file})
			if err != nil {
				t.Fatalf("enqueue: %v", err)
			}
			if got != tt.want {
				t.Errorf("report %+v, want %+v\n%s", got, tt.want, errw.String())
			}
			var lines []string
			if s := strings.TrimSuffix(errw.String(), "\n"); s != "" {
				lines = strings.Split(s, "\n")
			}
			if len(lines) != len(tt.wantRejected) {
				t.Errorf("%d lines reported, want %d:\n%s", len(lines), len(tt.wantRejected), errw.String())
			}
			for i, n := range tt.wantRejected {
				if prefix := fmt.Sprintf("%s:%d: rejected: ", tt.file, n); i < len(lines) && !strings.HasPrefix(lines[i], prefix) {
					t.Errorf("report line %d is %q, want it to start with %q", i+1, lines[i], prefix)
				}
			}
			want := append([]string(nil), tt.wantRows...)
			sort.Strings(want)
			if got := b.rows(t); !reflect.DeepEqual(got, want) {
				t.Errorf("rows:\n got %q\nwant %q", got, want)
			}
		})
	}
}

// TestEnqueueCSVLineTooLong: a CSV line past the limit stops the input with a usage error, the
// records before it enqueued.
func TestEnqueueCSVLineTooLong(t *testing.T) {
	t.Parallel()
	b := setupEnqueue(t)
	in := "phone,note\n79001234567,a\n79001234568," + strings.Repeat("x", 2<<20) + "\n79001234569,c\n"
	var errw bytes.Buffer
	got, err := enqueue(b.ctx, b.st, strings.NewReader(in), "big.csv", enqueueOptions{}, &rejectLog{w: &errw, name: "big.csv"})
	if exitCode(err, nil) != exitConfig || !strings.Contains(fmt.Sprint(err), "longer than") {
		t.Errorf("error %v (exit %d), want a usage error about the long line", err, exitCode(err, nil))
	}
	if got.Inserted != 1 {
		t.Errorf("report %+v, want the record before the long line inserted", got)
	}
}

// TestEnqueueRegionCommand runs `enrich enqueue --region RU` with the text and the JSON
// report, and the usage errors of the new flags.
func TestEnqueueRegionCommand(t *testing.T) {
	t.Parallel()
	const input = "8 900 123 45 67\n8 (900) 123-45-67\n79001234567@c.us\n+49 (0) 30 1234567\nhello\n+7 900 123 45 6x\n"
	dbURL := pgtest.NewDB(t)
	dir := t.TempDir()
	in := writeFile(t, dir, "in.txt", input)
	env := map[string]string{"DATABASE_URL": dbURL}

	stdout, stderr, err := runCLI(t, env, "enqueue", "--region", "ru", in)
	if err != nil {
		t.Fatalf("enqueue: %v\n%s", err, stderr)
	}
	if want := "inserted 2, duplicates 2, rejected 2\n"; stdout != want {
		t.Errorf("stdout %q, want %q", stdout, want)
	}
	for _, w := range []string{in + ":5: rejected: ", in + ":6: rejected: "} {
		if !strings.Contains(stderr, w) {
			t.Errorf("stderr lacks %q:\n%s", w, stderr)
		}
	}

	// Again, as JSON, from a config file's region: everything is a duplicate now.
	cfg := writeFile(t, dir, "cfg.toml", "[input]\nregion = \"RU\"\n")
	stdout, stderr, err = runCLI(t, env, "enqueue", "--config", cfg, "--report", "json", in)
	if err != nil {
		t.Fatalf("enqueue --report json: %v\n%s", err, stderr)
	}
	var rep struct {
		Region        string      `json:"region"`
		Inserted      int64       `json:"inserted"`
		Duplicates    int64       `json:"duplicates"`
		RejectedCount int64       `json:"rejected_count"`
		Rejected      []rejection `json:"rejected"`
		RejectedMore  int64       `json:"rejected_more"`
	}
	if err := json.Unmarshal([]byte(stdout), &rep); err != nil {
		t.Fatalf("stdout is not one JSON object: %v\n%s", err, stdout)
	}
	if rep.Region != "RU" || rep.Inserted != 0 || rep.Duplicates != 4 || rep.RejectedCount != 2 || len(rep.Rejected) != 2 || rep.RejectedMore != 0 {
		t.Errorf("report %+v", rep)
	}
	if len(rep.Rejected) == 2 && (rep.Rejected[0].Line != 5 || rep.Rejected[0].Input != "hello" || rep.Rejected[1].Line != 6 || rep.Rejected[1].Reason == "") {
		t.Errorf("rejected %+v", rep.Rejected)
	}
	if strings.Contains(stderr, "rejected") {
		t.Errorf("stderr repeats the rejections of the JSON report:\n%s", stderr)
	}

	// Without a region, national-looking numbers are counted and the hint names --region.
	nat := writeFile(t, dir, "nat.txt", "8 900 123 45 69\n")
	stdout, stderr, err = runCLI(t, env, "enqueue", nat)
	if err != nil {
		t.Fatalf("enqueue without a region: %v", err)
	}
	if want := "inserted 1, duplicates 0, rejected 0 (looking national: 1)\n"; stdout != want {
		t.Errorf("stdout %q, want %q", stdout, want)
	}
	if !strings.Contains(stderr, "--region") {
		t.Errorf("stderr has no hint to pass --region:\n%s", stderr)
	}

	for _, bad := range []struct {
		args []string
		want string
	}{
		{[]string{"--region", "Russia", in}, "input.region"},
		{[]string{"--format", "xml", in}, "--format"},
		{[]string{"--report", "yaml", in}, "--report"},
		{[]string{"--column", "phone", in}, "--column is for CSV"},
		{[]string{"--format", "csv", "--column", "0", in}, "numbered from 1"},
		{[]string{"--format", "csv", "--column", "tel", in}, "no such column"},
	} {
		_, _, err := runCLI(t, env, append([]string{"enqueue"}, bad.args...)...)
		if exitCode(err, nil) != exitConfig || err == nil || !strings.Contains(err.Error(), bad.want) {
			t.Errorf("enqueue %q: %v (exit %d), want exit %d naming %q", bad.args, err, exitCode(err, nil), exitConfig, bad.want)
		}
	}
}

// TestEnqueueMillionLines imports a generated 1,000,000-line messy CSV with the real binary and
// reports its peak RSS: the import streams (COPY in chunks), so memory stays bounded whatever
// the input's size.
func TestEnqueueMillionLines(t *testing.T) {
	if testing.Short() {
		t.Skip("a million rows: not in -short")
	}
	// Not parallel: a minute of a core's work would crowd the package's timing tests (the
	// shared budget's requests per second), which wait until the sequential tests are done.
	const (
		lines  = 1_000_000
		maxRSS = 64 << 20
	)
	dir := t.TempDir()
	path := filepath.Join(dir, "million.csv")
	fh, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	w := bufio.NewWriter(fh)
	fmt.Fprintln(w, "name;phone;note")
	wantRejected, wantUnique := 0, 0
	for i := range lines - 1 {
		n := i / 2 // every number twice, in two forms
		switch {
		case i%1000 == 999:
			fmt.Fprintf(w, "bad %d;not a number %d;x\n", i, i)
			wantRejected++
			continue
		case i%2 == 0:
			fmt.Fprintf(w, "\"Contact, %d\";8 (9%02d) %03d-%02d-%02d;\"a \"\"note\"\"\"\n", i, n/10_000_000%100, n/10_000%1000, n/100%100, n%100)
			wantUnique++
		default:
			fmt.Fprintf(w, "c%d;+7 9%02d %03d %02d %02d;\n", i, n/10_000_000%100, n/10_000%1000, n/100%100, n%100)
		}
	}
	if err := w.Flush(); err != nil {
		t.Fatal(err)
	}
	if err := fh.Close(); err != nil {
		t.Fatal(err)
	}

	dbURL := pgtest.NewDB(t)
	cmd := exec.Command(enrichBinary(t), "enqueue", "--region", "RU", "--report", "json", path)
	cmd.Env = append(os.Environ(), "DATABASE_URL="+dbURL, "ENRICH_CONFIG=")
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Start(); err != nil {
		t.Fatalf("start enqueue: %v", err)
	}
	// Linux records in a child's Maxrss the RSS of the process it was forked from, when it
	// execs: under -race with many tests this test process alone can pass the bound. So the
	// child's own high-water mark (VmHWM, of its address space after exec) is read while it
	// runs, and the bound is checked on it; Maxrss is reported beside it, and checked too when
	// this process's own peak is below the bound.
	hwm := watchPeakRSS(cmd.Process.Pid)
	err = cmd.Wait()
	peak := hwm()
	if err != nil {
		t.Fatalf("enqueue: %v\n%s", err, stderr.String())
	}
	rss := cmd.ProcessState.SysUsage().(*syscall.Rusage).Maxrss << 10 // KiB on Linux
	own := vmHWM("/proc/self/status")
	t.Logf("%d lines: peak RSS %.1f MiB (rusage Maxrss; the child's own VmHWM %.1f MiB, this test process's %.1f MiB), %s user, %s system",
		lines, float64(rss)/(1<<20), float64(peak)/(1<<20), float64(own)/(1<<20), cmd.ProcessState.UserTime(), cmd.ProcessState.SystemTime())
	if peak > maxRSS || (own < maxRSS && rss > maxRSS) {
		t.Errorf("peak RSS %d MiB (VmHWM %d MiB), want at most %d MiB", rss>>20, peak>>20, maxRSS>>20)
	}
	if peak == 0 {
		t.Errorf("the child's VmHWM was never read")
	}
	var rep struct {
		Inserted, Duplicates int64
		RejectedCount        int64 `json:"rejected_count"`
		Rejected             []rejection
		RejectedMore         int64 `json:"rejected_more"`
	}
	if err := json.Unmarshal(stdout.Bytes(), &rep); err != nil {
		t.Fatalf("report: %v\n%.500s", err, stdout.String())
	}
	wantDup := int64(lines - 1 - wantRejected - wantUnique)
	if rep.Inserted != int64(wantUnique) || rep.Duplicates != wantDup || rep.RejectedCount != int64(wantRejected) {
		t.Errorf("inserted %d, duplicates %d, rejected %d; want %d, %d, %d", rep.Inserted, rep.Duplicates, rep.RejectedCount,
			wantUnique, wantDup, wantRejected)
	}
	if len(rep.Rejected) != min(wantRejected, rejectedShown) || rep.RejectedMore != int64(max(wantRejected-rejectedShown, 0)) {
		t.Errorf("%d rejected lines listed and %d more, want %d listed", len(rep.Rejected), rep.RejectedMore, min(wantRejected, rejectedShown))
	}
	if len(rep.Rejected) > 0 && rep.Rejected[0].Line != 1001 {
		t.Errorf("first rejected line %d, want 1001 (the header is line 1)", rep.Rejected[0].Line)
	}
	pool := pgtest.Connect(t, dbURL)
	var n int64
	if err := pool.QueryRow(context.Background(), "SELECT count(*) FROM contacts").Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != int64(wantUnique) {
		t.Errorf("%d rows in the table, want %d", n, wantUnique)
	}
}
