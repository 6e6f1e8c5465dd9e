package main

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
	"sort"
	"strings"
	"text/tabwriter"
	"time"
)

// Figure is one measured number with its target.
type Figure struct {
	Scenario string  `json:"scenario"`
	Name     string  `json:"name"`
	Value    float64 `json:"value"`
	Unit     string  `json:"unit"`
	// Target is the bound the value should keep, e.g. ">= 0.98"; empty when the figure is for
	// information.
	Target string `json:"target,omitempty"`
	// Met says whether Value keeps Target; absent when there is no target.
	Met *bool `json:"met,omitempty"`
	// N is how many runs (or claims) Value is the median of; Runs are their values.
	N    int       `json:"n"`
	Runs []float64 `json:"runs,omitempty"`
	Note string    `json:"note,omitempty"`
}

// target sets f's target, op one of >=, <=, ==, and whether the value keeps it.
func (f Figure) target(op string, bound float64) Figure {
	var met bool
	switch op {
	case ">=":
		met = f.Value >= bound
	case "<=":
		met = f.Value <= bound
	case "==":
		met = f.Value == bound
	default:
		panic("bench: unknown target operator " + op)
	}
	f.Target = op + " " + formatValue(bound, f.Unit)
	f.Met = &met
	return f
}

// Machine is where the figures were measured.
type Machine struct {
	Cores      int     `json:"cores"`
	CPU        string  `json:"cpu"`
	MemoryGiB  float64 `json:"memory_gib"`
	Go         string  `json:"go"`
	PostgreSQL string  `json:"postgresql"`
	Autovacuum string  `json:"autovacuum"`
	Commit     string  `json:"commit"`
	LoadAvg    float64 `json:"load_average_1m_at_start"`
	Date       string  `json:"date"`
}

// Results is bench/results.json.
type Results struct {
	Mode     string  `json:"mode"`
	Machine  Machine `json:"machine"`
	Duration string  `json:"duration"`
	// Scenarios is each scenario's wall time.
	Scenarios map[string]string `json:"scenario_durations"`
	// Loads is the 1-minute load average as each scenario began: anything well above the
	// bench's own (about 1-2 here) is someone else's work on the machine.
	Loads   map[string]float64 `json:"scenario_load_average"`
	Figures []Figure           `json:"figures"`
	// Errors are scenarios that failed, by name.
	Errors map[string]string `json:"errors,omitempty"`
	// Details are what each scenario measured beyond its figures (per-run numbers, plans).
	Details map[string]any `json:"details,omitempty"`
}

// formatValue writes v in its unit's usual precision.
func formatValue(v float64, unit string) string {
	switch unit {
	case "ratio", "×":
		return fmt.Sprintf("%.3f", v)
	case "ms":
		if v < 10 {
			return fmt.Sprintf("%.2f ms", v)
		}
		return fmt.Sprintf("%.1f ms", v)
	case "MiB":
		return fmt.Sprintf("%.1f MiB", v)
	case "µs/row", "µs/req":
		return fmt.Sprintf("%.1f %s", v, unit)
	case "rows/s", "req/s", "calls/s":
		if v < 100 {
			return fmt.Sprintf("%.2f %s", v, unit)
		}
		return fmt.Sprintf("%.0f %s", v, unit)
	case "":
		if v == math.Trunc(v) {
			return fmt.Sprintf("%.0f", v)
		}
		return fmt.Sprintf("%g", v)
	default:
		if v == math.Trunc(v) && math.Abs(v) < 1e15 {
			return fmt.Sprintf("%.0f %s", v, unit)
		}
		return fmt.Sprintf("%.3g %s", v, unit)
	}
}

// printTable writes the figures for people.
func printTable(w io.Writer, figs []Figure) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "scenario\tfigure\tvalue\ttarget\tmet\tn")
	for _, f := range figs {
		met := "-"
		if f.Met != nil {
			met = "yes"
			if !*f.Met {
				met = "NO"
			}
		}
		target := f.Target
		if target == "" {
			target = "-"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%d\n", f.Scenario, f.Name, formatValue(f.Value, f.Unit), target, met, f.N)
	}
	_ = tw.Flush()
}

// printNotes writes each figure's note, numbered by row, under the table.
func printNotes(w io.Writer, figs []Figure) {
	for _, f := range figs {
		if f.Note != "" {
			fmt.Fprintf(w, "  %s / %s: %s\n", f.Scenario, f.Name, f.Note)
		}
	}
}

func writeJSON(path string, r Results) error {
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(b, '\n'), 0o644)
}

// median of xs (not modified); NaN for none.
func median(xs []float64) float64 {
	if len(xs) == 0 {
		return math.NaN()
	}
	s := append([]float64(nil), xs...)
	sort.Float64s(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func medianDur(ds []time.Duration) time.Duration {
	xs := make([]float64, len(ds))
	for i, d := range ds {
		xs[i] = float64(d)
	}
	return time.Duration(median(xs))
}

// ms is d in milliseconds.
func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// mib is b bytes in MiB.
func mib(b int64) float64 { return float64(b) / (1 << 20) }

// round keeps a few significant digits of the per-run values in the JSON.
func round(x float64) float64 {
	if x == 0 || math.IsNaN(x) || math.IsInf(x, 0) {
		return x
	}
	p := math.Pow(10, 4-math.Ceil(math.Log10(math.Abs(x))))
	return math.Round(x*p) / p
}

func rounded(xs []float64) []float64 {
	out := make([]float64, len(xs))
	for i, x := range xs {
		out[i] = round(x)
	}
	return out
}

// joinInts writes 1, 10, 100.
func joinInts(xs []int) string {
	s := make([]string, len(xs))
	for i, x := range xs {
		s[i] = fmt.Sprint(x)
	}
	return strings.Join(s, ", ")
}
