package main

import (
	"context"
	"fmt"
	"io"
	"sort"
	"strconv"
	"text/tabwriter"
	"time"

	"github.com/enrich-dev/enrich/enrich"
	"github.com/enrich-dev/enrich/store"
)

// The states `enrich status` gives an instance, from its shared budget and the config.
const (
	// instReady: nothing holds the instance back.
	instReady = "ready"
	// instThrottled: a 429 cut its rate below its rps, and it has not climbed back yet.
	instThrottled = "throttled"
	// instPaused: a Retry-After pause is under way.
	instPaused = "paused"
	// instCapped: it was handed its max_per_day slots today.
	instCapped = "capped"
	// instQuotaSpent: it answered 466 today (its plan's quota is spent): runs skip it until the
	// day turns.
	instQuotaSpent = "quota_spent"
	// instUnused: the config names it, but no run has used it in this database yet.
	instUnused = "unused"
)

// instanceView is one instance as status shows it.
type instanceView struct {
	store.InstanceBudget
	// Configured says the config names the instance; RPS and MaxPerDay are then its rps and
	// max_per_day (0: no cap).
	Configured bool
	RPS        float64
	MaxPerDay  int64
	// Used says a run has used the instance (it has a row in the shared budget).
	Used  bool
	State string
}

// instancesView is every instance status shows: the shared budget's, and the config's that have
// none yet.
type instancesView struct {
	day, takenAt time.Time
	list         []instanceView
}

// readInstances reads the shared budget and joins the config's instances to it.
func readInstances(ctx context.Context, st *store.Store, v statusView) (instancesView, error) {
	conf := map[string]InstanceConfig{}
	maxRPS := map[string]float64{}
	for _, in := range v.Configured {
		conf[in.ID] = in
		maxRPS[in.ID] = instanceRPS(in)
	}
	got, err := st.Instances(ctx, store.InstancesRequest{Day: v.Day, Policy: enrich.SharedPolicy(), MaxRPS: maxRPS})
	if err != nil {
		return instancesView{}, err
	}
	out := instancesView{day: got.Today, takenAt: got.TakenAt}
	seen := map[string]bool{}
	for _, b := range got.List {
		seen[b.ID] = true
		out.list = append(out.list, newInstanceView(b, conf, true))
	}
	for id := range conf {
		if !seen[id] {
			out.list = append(out.list, newInstanceView(store.InstanceBudget{ID: id}, conf, false))
		}
	}
	sort.Slice(out.list, func(i, j int) bool { return out.list[i].ID < out.list[j].ID })
	return out, nil
}

// instanceRPS is an instance's configured rps, or the default a run gives it.
func instanceRPS(in InstanceConfig) float64 {
	if in.RPS != nil {
		return *in.RPS
	}
	return RPSDefault
}

func newInstanceView(b store.InstanceBudget, conf map[string]InstanceConfig, used bool) instanceView {
	iv := instanceView{InstanceBudget: b, Used: used}
	if in, ok := conf[b.ID]; ok {
		iv.Configured, iv.RPS, iv.MaxPerDay = true, instanceRPS(in), in.MaxPerDay
	}
	switch {
	case !used:
		iv.State = instUnused
	case b.QuotaSpent:
		iv.State = instQuotaSpent
	case iv.Configured && iv.MaxPerDay > 0 && b.UsedToday >= iv.MaxPerDay:
		iv.State = instCapped
	case b.PausedUntil != nil:
		iv.State = instPaused
	case iv.Configured && b.Rate < iv.RPS:
		iv.State = instThrottled
	default:
		iv.State = instReady
	}
	return iv
}

// instanceJSON is one entry of "instances" in `enrich status --json`.
type instanceJSON struct {
	ID string `json:"id"`
	// Configured says the config names the instance; rps and max_per_day are null when not.
	Configured bool     `json:"configured"`
	State      string   `json:"state"`
	RPS        *float64 `json:"rps"`
	MaxPerDay  *int64   `json:"max_per_day"`
	// Rate and Headroom are null for an instance no run has used.
	Rate        *float64   `json:"rate"`
	Headroom    *float64   `json:"headroom"`
	UsedToday   int64      `json:"used_today"`
	QuotaSpent  bool       `json:"quota_spent"`
	AnsweredAt  *time.Time `json:"answered_at"`
	PausedUntil *time.Time `json:"paused_until"`
	CutAt       *time.Time `json:"cut_at"`
	UpdatedAt   *time.Time `json:"updated_at"`
}

func (iv instanceView) json() instanceJSON {
	j := instanceJSON{ID: iv.ID, Configured: iv.Configured, State: iv.State, UsedToday: iv.UsedToday, QuotaSpent: iv.QuotaSpent,
		AnsweredAt: utc(iv.AnsweredAt), PausedUntil: utc(iv.PausedUntil), CutAt: utc(iv.CutAt)}
	if iv.Configured {
		rps, perDay := iv.RPS, iv.MaxPerDay
		j.RPS, j.MaxPerDay = &rps, &perDay
	}
	if iv.Used {
		rate, headroom := iv.Rate, iv.Headroom
		j.Rate, j.Headroom, j.UpdatedAt = &rate, &headroom, utc(&iv.UpdatedAt)
	}
	return j
}

// printInstances writes the instances' section of the status table: one line per instance,
// every cell one word ("-" for none).
func printInstances(w io.Writer, insts instancesView) {
	fmt.Fprintf(w, "instances (day %s)\n", insts.day.Format(time.DateOnly))
	if len(insts.list) == 0 {
		fmt.Fprintf(w, "  none: no run has used an instance in this database, and the config names none\n")
		return
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "  ID\tSTATE\tRATE\tRPS\tHEADROOM\tUSED_TODAY\tMAX_PER_DAY\tQUOTA_SPENT\tLAST_ANSWER\tPAUSED_UNTIL\n")
	num := func(f float64) string { return strconv.FormatFloat(f, 'g', 4, 64) }
	when := func(t *time.Time) string {
		if t == nil {
			return "-"
		}
		return t.UTC().Format(time.RFC3339)
	}
	for _, iv := range insts.list {
		rate, headroom, rps, perDay, quota := "-", "-", "-", "-", "no"
		if iv.Used {
			rate, headroom = num(iv.Rate), num(iv.Headroom)
		}
		if iv.Configured {
			rps, perDay = num(iv.RPS), strconv.FormatInt(iv.MaxPerDay, 10)
			if iv.MaxPerDay == 0 {
				perDay = "none"
			}
		}
		if iv.QuotaSpent {
			quota = "yes"
		}
		answered := when(iv.AnsweredAt)
		if iv.Used && iv.AnsweredAt == nil {
			answered = "never"
		}
		fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\t%s\t%d\t%s\t%s\t%s\t%s\n", iv.ID, iv.State, rate, rps, headroom, iv.UsedToday, perDay,
			quota, answered, when(iv.PausedUntil))
	}
	_ = tw.Flush()
}
