package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/enrich-dev/enrich/internal/pgtest"
)

// countingReader counts the bytes read from it.
type countingReader struct {
	r io.Reader
	n atomic.Int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n.Add(int64(n))
	return n, err
}

// TestImportChecksBeforeReading: a --column past the first row's fields or not in its header, a
// --field the first object lacks, and a table that does not exist stop enqueue before it reads
// the input (a 2 MB stdin here: at most the first 64 KiB buffer is read), with exit 1 (3 for the
// table) and a message naming the flag.
func TestImportChecksBeforeReading(t *testing.T) {
	t.Parallel()
	dbURL := pgtest.NewDB(t)
	var csvIn, jsonIn strings.Builder
	csvIn.WriteString("name,phone\n")
	for i := range 60_000 {
		csvIn.WriteString("x,7900" + strings.Repeat("1", 3) + string(rune('0'+i%10)) + "234567\n")
		jsonIn.WriteString(`{"phone":"79001234567"}` + "\n")
	}
	for _, tc := range []struct {
		name, input string
		args        []string
		code        int
		want        []string
	}{
		{"column 9 of 2", csvIn.String(), []string{"--format", "csv", "--column", "9"}, exitConfig,
			[]string{"--column 9", "has 2 columns", `["name" "phone"]`}},
		{"column 0", csvIn.String(), []string{"--format", "csv", "--column", "0"}, exitConfig, []string{"--column 0", "numbered from 1"}},
		{"column name", csvIn.String(), []string{"--format", "csv", "--column", "foo"}, exitConfig,
			[]string{`--column "foo"`, "no such column", `["name" "phone"]`}},
		{"field", jsonIn.String(), []string{"--format", "jsonl", "--field", "msisdn"}, exitConfig,
			[]string{`--field "msisdn"`, "no such field", `["phone"]`}},
		{"table", csvIn.String(), []string{"--format", "csv", "--table", "nosuch"}, exitDatabase,
			[]string{`"nosuch"`, "does not exist", "enrich migrate"}},
		{"max-rejected", csvIn.String(), []string{"--max-rejected", "ten"}, exitConfig, []string{`--max-rejected "ten"`, "0.5%"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			in := &countingReader{r: strings.NewReader(tc.input)}
			var out, errw bytes.Buffer
			err := run(context.Background(), append([]string{"enqueue"}, append(tc.args, "-")...),
				stdio{in: in, out: &out, err: &errw, getenv: envOf(map[string]string{"DATABASE_URL": dbURL})})
			t.Logf("enqueue %s: exit %d after reading %d of %d bytes: %v", strings.Join(tc.args, " "), exitCode(err, nil),
				in.n.Load(), len(tc.input), err)
			if code := exitCode(err, nil); code != tc.code {
				t.Errorf("exit %d, want %d: %v", code, tc.code, err)
			}
			for _, w := range tc.want {
				if err == nil || !strings.Contains(err.Error(), w) {
					t.Errorf("error %v lacks %q", err, w)
				}
			}
			if n := in.n.Load(); n > 64<<10 {
				t.Errorf("read %d bytes of the input before failing, want at most the first 64 KiB", n)
			}
			if strings.Contains(err.Error(), "run `enrich migrate`") && strings.Count(err.Error(), "enrich migrate") != 1 {
				t.Errorf("the migrate hint is given %d times: %v", strings.Count(err.Error(), "enrich migrate"), err)
			}
		})
	}
}

// TestImportDryRunRejectsMaxRejected: --dry-run counts and writes nothing; --rejects FILE holds
// every rejected line under its reason, and enqueues again as it is; --max-rejected N or P%
// fails with exit 1 and commits nothing when more are rejected, and commits all otherwise.
func TestImportDryRunRejectsMaxRejected(t *testing.T) {
	t.Parallel()
	const input = "79001234567\nnot a number\n79001234568\n79001234567\n12\n79001234569\n"
	dir := t.TempDir()
	enq := func(t *testing.T, dbURL string, args ...string) (string, string, error) {
		t.Helper()
		return runCLIInput(t, input, map[string]string{"DATABASE_URL": dbURL}, append([]string{"enqueue"}, append(args, "-")...)...)
	}
	rows := func(t *testing.T, dbURL string) int {
		t.Helper()
		var n int
		if err := pgtest.Connect(t, dbURL).QueryRow(context.Background(), "SELECT count(*) FROM contacts").Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	t.Run("dry-run", func(t *testing.T) {
		t.Parallel()
		dbURL := pgtest.NewDB(t)
		if _, _, err := runCLIInput(t, "79001234568\n", map[string]string{"DATABASE_URL": dbURL}, "enqueue", "-"); err != nil {
			t.Fatal(err)
		}
		out, _, err := enq(t, dbURL, "--dry-run")
		t.Logf("--dry-run: %q", out)
		if err != nil || out != "dry run, nothing written: would insert 2, duplicates 2, rejected 2\n" || rows(t, dbURL) != 1 {
			t.Errorf("--dry-run: %v, %q, %d rows; want would insert 2, duplicates 2 (one in the table, one in the input), "+
				"rejected 2, and the table's 1 row", err, out, rows(t, dbURL))
		}
		out, _, err = enq(t, dbURL, "--dry-run", "--report", "json")
		var rep struct {
			Inserted  int64
			DryRun    bool  `json:"dry_run"`
			Written   bool  `json:"written"`
			RejectedN int64 `json:"rejected_count"`
		}
		if err != nil || json.Unmarshal([]byte(out), &rep) != nil || !rep.DryRun || rep.Written || rep.Inserted != 2 || rep.RejectedN != 2 {
			t.Errorf("--dry-run --report json: %v\n%s", err, out)
		}
	})
	t.Run("rejects", func(t *testing.T) {
		t.Parallel()
		dbURL := pgtest.NewDB(t)
		path := filepath.Join(dir, "rejects.txt")
		if _, _, err := enq(t, dbURL, "--rejects", path); err != nil {
			t.Fatal(err)
		}
		got, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("--rejects file:\n%s", got)
		lines := strings.Split(strings.TrimSuffix(string(got), "\n"), "\n")
		if len(lines) != 4 || !strings.HasPrefix(lines[0], "# stdin:2: ") || lines[1] != "not a number" ||
			!strings.HasPrefix(lines[2], "# stdin:5: ") || lines[3] != "12" {
			t.Fatalf("rejects file:\n%s\nwant each rejected line under a '# stdin:LINE: reason' comment", got)
		}
		// Fixed, it enqueues again: the comments are skipped.
		fixed := strings.Replace(strings.Replace(string(got), "\nnot a number\n", "\n+7 900 123-45-70\n", 1), "\n12\n", "\n79001234571\n", 1)
		writeFile(t, dir, "fixed.txt", fixed)
		out, _, err := runCLI(t, map[string]string{"DATABASE_URL": dbURL}, "enqueue", filepath.Join(dir, "fixed.txt"))
		if err != nil || out != "inserted 2, duplicates 0, rejected 0\n" || rows(t, dbURL) != 5 {
			t.Errorf("the fixed rejects file: %v, %q, %d rows; want 2 inserted, 5 rows", err, out, rows(t, dbURL))
		}
		if _, _, err := enq(t, dbURL, "--rejects", filepath.Join(dir, "no", "such", "dir")); exitCode(err, nil) != exitConfig {
			t.Errorf("--rejects in a missing directory: %v, want exit 1", err)
		}
	})
	for _, tc := range []struct {
		limit string
		fail  bool
	}{{"1", true}, {"2", false}, {"33%", true}, {"34%", false}, {"0", true}} {
		t.Run("max-rejected "+tc.limit, func(t *testing.T) {
			t.Parallel()
			dbURL := pgtest.NewDB(t)
			out, _, err := enq(t, dbURL, "--max-rejected", tc.limit)
			t.Logf("--max-rejected %s: %q, %v", tc.limit, out, err)
			if tc.fail {
				if exitCode(err, nil) != exitConfig || !strings.Contains(err.Error(), "--max-rejected "+tc.limit) ||
					!strings.Contains(out, "nothing written") || rows(t, dbURL) != 0 {
					t.Errorf("--max-rejected %s with 2 of 6 rejected: %v, %q, %d rows; want exit 1 and nothing written",
						tc.limit, err, out, rows(t, dbURL))
				}
				return
			}
			if err != nil || out != "inserted 3, duplicates 1, rejected 2\n" || rows(t, dbURL) != 3 {
				t.Errorf("--max-rejected %s with 2 of 6 rejected: %v, %q, %d rows; want 3 inserted", tc.limit, err, out, rows(t, dbURL))
			}
		})
	}
}
