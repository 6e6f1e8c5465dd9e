package main

import (
	"bytes"
	"encoding/json"
	"io"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/creack/pty"
)

// TestInterruptSummary: SIGINT mid-run is a normal end (README): the summary says "stopped by
// SIGINT", JSON says success without an error, and the exit code stays 130.
func TestInterruptSummary(t *testing.T) {
	t.Parallel()
	for _, format := range []string{"text", "json"} {
		t.Run(format, func(t *testing.T) {
			t.Parallel()
			inst, simCfg := opsInstance("tok-int-" + format)
			b := setupProc(t, 400, inst, simCfg, "", 5)
			cmd, logs := b.command(t, "run", "--log-format", "json", "--progress", "off", "--summary", format)
			var stdout bytes.Buffer
			cmd.Stdout = &stdout
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			select {
			case <-b.answered:
			case <-time.After(60 * time.Second):
				_ = cmd.Process.Kill()
				_ = cmd.Wait()
				t.Fatalf("the simulator saw too few requests in 60 s; logs:\n%s", logs)
			}
			if err := cmd.Process.Signal(syscall.SIGINT); err != nil {
				t.Fatal(err)
			}
			if code := exitStatus(cmd.Wait()); code != 130 {
				t.Fatalf("exit %d, want 130; logs:\n%s", code, logs)
			}
			out := stdout.String()
			t.Logf("summary after SIGINT:\n%s", out)
			switch format {
			case "text":
				if !strings.Contains(out, ": stopped by SIGINT (exit 130) after ") || strings.Contains(out, "failed (exit") ||
					strings.Contains(out, "error:") {
					t.Errorf("text summary after SIGINT: want \"stopped by SIGINT (exit 130)\", no failure, no error line:\n%s", out)
				}
			case "json":
				var s summaryJSON
				if err := json.Unmarshal(stdout.Bytes(), &s); err != nil {
					t.Fatalf("summary: %v\n%s", err, out)
				}
				if !s.Success || s.ExitCode != 130 || s.Error != "" || s.Stop != "interrupted" {
					t.Errorf("JSON summary after SIGINT %+v: want success, exit_code 130, no error, stop interrupted", s)
				}
			}
		})
	}
}

// TestInterruptedBar: on a terminal, the bar of a run stopped by SIGINT stays where the run got
// to; it is not drawn full.
func TestInterruptedBar(t *testing.T) {
	t.Parallel()
	inst, simCfg := opsInstance("tok-int-bar")
	b := setupProc(t, 400, inst, simCfg, "", 5)
	cmd, _ := b.command(t, "run", "--summary", "log")
	cmd.Stdout, cmd.Stderr = nil, nil
	tty, err := pty.StartWithSize(cmd, &pty.Winsize{Rows: 40, Cols: 200})
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	copied := make(chan struct{})
	go func() { defer close(copied); _, _ = io.Copy(&buf, tty) }() // ends with EIO when the process exits
	select {
	case <-b.answered:
	case <-time.After(60 * time.Second):
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		t.Fatalf("the simulator saw too few requests in 60 s")
	}
	if err := cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	err = cmd.Wait()
	<-copied
	tty.Close()
	if code := exitStatus(err); code != 130 {
		t.Fatalf("exit %d, want 130:\n%q", code, buf.String())
	}
	out := buf.String()
	i := strings.LastIndex(out, " / 400 rows")
	if i < 0 {
		t.Fatalf("no bar of 400 rows drawn:\n%q", out)
	}
	frame := out[i:]
	if j := strings.IndexAny(frame, "\r\n"); j >= 0 {
		frame = frame[:j]
	}
	t.Logf("the last frame after SIGINT: %q", frame)
	open, shut := strings.Index(frame, "["), strings.Index(frame, "]")
	if open < 0 || shut < open || !strings.Contains(frame[open:shut], "-") || strings.Contains(out, "400 / 400 rows") {
		t.Errorf("the bar after SIGINT is drawn full (or not at all): %q", frame)
	}
}
