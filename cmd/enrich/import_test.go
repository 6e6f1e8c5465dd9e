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
	"unicode/utf8"

	"github.com/enrich-dev/enrich/greenapi/simulator"
	"github.com/enrich-dev/enrich/internal/pgtest"
)

// The forms numbers are written in, and what is refused, are phone.TestNormalize's table.

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

// TestEnqueueLargeImport imports a generated 200,000-line messy CSV with the real binary and
// checks every count and its peak RSS: the import streams (COPY in chunks), so memory stays
// bounded whatever the input's size. The million-line figure is make bench's (scenario memory).
func TestEnqueueLargeImport(t *testing.T) {
	t.Parallel()
	const (
		lines  = 200_000
		maxRSS = 64 << 20
	)
	dir := t.TempDir()
	path := filepath.Join(dir, "large.csv")
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

// TestRejectLogCutsAtACharacter: a long rejected input is shortened at a character's start,
// so the report never shows half of one (a no-break space cut in two printed as a stray byte).
func TestRejectLogCutsAtACharacter(t *testing.T) {
	t.Parallel()
	in := strings.Repeat("7", inputShown-1) + "\u00a0" + strings.Repeat("7", 10) // the NBSP spans the cut
	rej := &rejectLog{}
	rej.add(1, in, fmt.Errorf("too long"))
	if len(rej.shown) != 1 {
		t.Fatalf("%d rejections kept, want 1", len(rej.shown))
	}
	got := rej.shown[0].Input
	if !utf8.ValidString(got) || got != strings.Repeat("7", inputShown-1)+"…" {
		t.Errorf("shown input %q, want the %d digits before the no-break space, then …", got, inputShown-1)
	}
}

// TestEnqueueEveryLengthEndToEnd: numbers of 10 and 13 digits (Singapore and Norway, Brazil and
// Argentina), as people write them (with no-break spaces and Unicode dashes too), imported by the
// real binary's enqueue, are stored as their digits, then called by its run against the
// simulator, which takes 10 to 15 digits as today's API does, and each is answered and written
// as the simulator answered it. (enqueue refused every one of them: "bad request data".)
func TestEnqueueEveryLengthEndToEnd(t *testing.T) {
	t.Parallel()
	const id = "1101000081"
	inst := simulator.Instance{ID: id, Token: "tok-lengths-81", RPS: 50}
	b := setupProc(t, 0, inst, weightsNoBadRequest(simulator.Config{Seed: 81, Edition: simulator.EditionCurrent}), "", 0)
	var in strings.Builder
	want := map[string]bool{}
	for i := range 15 {
		for _, n := range []struct{ written, digits string }{
			{fmt.Sprintf("+65 9%03d %04d", i, 1000+i), fmt.Sprintf("659%03d%04d", i, 1000+i)},                       // 10
			{fmt.Sprintf("+47\u00a0912\u00a0%02d\u00a0%03d", i, 100+i), fmt.Sprintf("47912%02d%03d", i, 100+i)},     // 10
			{fmt.Sprintf("+55 (11) 9%04d\u2013%04d", 1000+i, 2000+i), fmt.Sprintf("55119%04d%04d", 1000+i, 2000+i)}, // 13
			{fmt.Sprintf("54 9 11 %04d-%04d", 3000+i, 4000+i), fmt.Sprintf("54911%04d%04d", 3000+i, 4000+i)},        // 13
		} {
			fmt.Fprintln(&in, n.written)
			want[n.digits] = true
		}
	}
	file := writeFile(t, t.TempDir(), "numbers.txt", in.String())
	cmd, out := b.command(t, "enqueue", file)
	if err := cmd.Run(); err != nil {
		t.Fatalf("enqueue: %v\n%s", err, out)
	}
	if !strings.Contains(out.String(), "inserted 60, duplicates 0, rejected 0") {
		t.Fatalf("enqueue reported:\n%s\nwant 60 inserted, none rejected", out)
	}
	rows := b.rows(t)
	for _, r := range rows {
		if !want[r.phone] {
			t.Errorf("stored %q, not one of the numbers' digits", r.phone)
		}
	}
	if len(rows) != len(want) {
		t.Fatalf("%d rows stored, want %d", len(rows), len(want))
	}

	cmd, out = b.command(t, "run")
	if err := cmd.Run(); err != nil {
		t.Fatalf("run: %v\n%s", err, out)
	}
	done, failed := b.checkWritten(t, b.rows(t))
	if done != 60 || failed != 0 {
		t.Errorf("done %d, failed %d; want all 60 answered\n%s", done, failed, out)
	}
	for n := range want {
		if got := b.sim.Answers(n); got != 1 {
			t.Errorf("%s answered %d times, want once", n, got)
		}
	}
	if inv := b.sim.Stats().Invalid; inv != 0 {
		t.Errorf("%d requests the simulator took for invalid", inv)
	}
	t.Logf("60 numbers of 10 and 13 digits: enqueued 60, answered %d, failed %d", done, failed)
}
