package main

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/enrich-dev/enrich/greenapi/simulator"
)

// TestDebugLog: --log-level debug logs each claim, each call with its class, each write batch,
// and the pause and resume of an instance that went starting mid-run; at info none of them.
func TestDebugLog(t *testing.T) {
	t.Parallel()
	debugOnly := []string{"claimed", "call", "results written", "pause", "resume"}
	for _, level := range []string{"debug", "info"} {
		t.Run(level, func(t *testing.T) {
			t.Parallel()
			enrichBinary(t) // built first: the starting windows (every 2 s) are timed from the simulator's start
			inst := simulator.Instance{ID: "1101000077", Token: "tok-debug-" + level, RPS: 50, Burst: 5,
				StartingAfter: time.Second, StartingFor: 400 * time.Millisecond, StartingEvery: 2 * time.Second}
			b := setupProc(t, 300, inst, simulator.Config{Seed: 5, LatencyMedian: 5 * time.Millisecond,
				LatencyP99: 20 * time.Millisecond}, "[run]\nworkers = 4\nbatch_size = 50\n", 1)
			cmd, _ := b.command(t, "run", "--log-format", "json", "--log-level", level, "--progress", "off", "--summary", "json")
			var stdout, stderr bytes.Buffer
			cmd.Stdout, cmd.Stderr = &stdout, &stderr
			if err := cmd.Run(); err != nil {
				t.Fatalf("run: %v\n%s", err, stderr.String())
			}
			var sum summaryJSON
			if err := json.Unmarshal(stdout.Bytes(), &sum); err != nil {
				t.Fatalf("summary: %v\n%s", err, stdout.String())
			}
			count := map[string]int{}
			classes := map[string]int{}
			for line := range strings.Lines(stderr.String()) {
				var l struct {
					Level, Message, Class string
					Rows, Results         int
				}
				if json.Unmarshal([]byte(line), &l) != nil {
					t.Fatalf("not a JSON log line: %q", line)
				}
				if l.Level == "debug" {
					count[l.Message]++
				}
				switch l.Message {
				case "call":
					classes[l.Class]++
				case "claimed":
					count["rows claimed"] += l.Rows
				case "results written":
					count["results"] += l.Results
				}
			}
			t.Logf("--log-level %s: debug lines %v, call classes %v; summary calls %v", level, count, classes, sum.Calls)
			if level == "info" {
				for _, m := range debugOnly {
					if count[m] != 0 {
						t.Errorf("--log-level info logged %d %q lines", count[m], m)
					}
				}
				return
			}
			for _, m := range debugOnly {
				if count[m] == 0 {
					t.Errorf("--log-level debug logged no %q line:\n%s", m, stderr.String())
				}
			}
			var getAvatar int64
			for k, v := range sum.Calls {
				if strings.HasPrefix(k, "getAvatar ") {
					getAvatar += v
				}
			}
			if int64(count["call"]) != getAvatar || classes["ok"] != int(sum.Calls["getAvatar ok"]) || classes["starting"] == 0 {
				t.Errorf("%d call lines (classes %v), want one per GetAvatar call (%d, %v), some of them starting",
					count["call"], classes, getAvatar, sum.Calls)
			}
			if int64(count["rows claimed"]) != sum.Claimed || count["results"] < 300 {
				t.Errorf("claim lines say %d rows, summary %d; write lines say %d results, want at least 300",
					count["rows claimed"], sum.Claimed, count["results"])
			}
		})
	}
}
