package simulator

import (
	"sync"
	"time"

	"github.com/enrich-dev/enrich/greenapi"
)

// Stats is a copy of the simulator's counters, so that tests can assert what reached the
// "server": how often each number was asked and answered, and whether a client kept to the
// limits.
type Stats struct {
	// Requests is every request the handler saw, whatever its path or answer.
	Requests int
	// Invalid is getAvatar and checkWhatsapp requests naming a number or chatId that fails
	// greenapi validation: a correct client sends none.
	Invalid int
	// Refused is every request met by an outage (Config.OutageAfter, OutageFor): its
	// connection closed with no answer. They are part of Requests, and of nothing else.
	Refused int
	// Instances are per idInstance.
	Instances map[string]InstanceStats
	// Chats are per normalized chat key (see Truth.Key).
	Chats map[string]ChatStats
}

// InstanceStats counts the requests that reached one instance with the right token.
type InstanceStats struct {
	// Requests is every request with the right token and a known method: Accepted + TooMany.
	Requests int
	// Accepted passed the rate limiter.
	Accepted int
	// TooMany were answered 429 (by the limiter, or all of them under TooManyAll).
	TooMany int
	// TooManyAt is when each of those 429s arrived, measured from the simulator's start, in
	// arrival order; only the first MaxTooManyAt are kept. Tests that measure how a client
	// paces itself after a 429 read it. The slice is shared, not copied: do not modify it.
	TooManyAt []time.Duration
	// Unauthorized were answered 401 (wrong token); not part of Requests.
	Unauthorized int
	// WrongHost were answered 403 because they came to another pool's host (Instance.Pool);
	// not part of Requests.
	WrongHost int
	// QuotaExceeded were answered 466 (they are part of Accepted).
	QuotaExceeded int
	// ServerErrors were answered an injected 5xx.
	ServerErrors int
	// Hung were never answered (HangRate).
	Hung int
	// Empty were getAvatar calls answered a 200 with none of the documented fields
	// (EmptyRate).
	Empty int
	// MaxInAnySecond is the most Requests (429s included) that arrived within any sliding
	// one-second window: a client that keeps to N rps keeps this at or near N.
	MaxInAnySecond int
	// Methods are per canonical method name ("getAvatar", "checkWhatsapp",
	// "getStateInstance"); only methods that were called appear.
	Methods map[string]MethodStats
}

// MethodStats counts one method on one instance, each method having its own rate limit.
type MethodStats struct {
	// Requests reached the method's limiter: Accepted + TooMany.
	Requests int
	// Accepted passed it.
	Accepted int
	// TooMany were answered 429.
	TooMany int
}

// ChatStats counts what happened to one number, so a test can see that each row was asked
// and answered as often as it should.
type ChatStats struct {
	// Calls is every getAvatar request with the right credentials naming the chat, whatever
	// the answer (429, 466, 5xx, hangs, empty 200s and a current edition's refusal of
	// phoneNumber included).
	Calls int
	// Answers is getAvatar answers that told the number's truth: a 200 with it, or, for a
	// bad-request number, its "bad request data" in whichever form the edition sends.
	Answers int
	// Timeouts is getAvatar answers of "get avatar timeout limit exceeded".
	Timeouts int
	// Empties is getAvatar answers of a 200 with none of the documented fields (EmptyRate).
	Empties int
	// CheckCalls, CheckAnswers and CheckTimeouts are the same for checkWhatsapp.
	CheckCalls    int
	CheckAnswers  int
	CheckTimeouts int
}

// methodID indexes per-method state; the order is that of methods.
type methodID uint8

const (
	mGetAvatar methodID = iota
	mCheckWhatsapp
	mGetStateInstance
	numMethods
)

// methodInfo is what routing needs to know about an API method.
type methodInfo struct {
	name       string
	httpMethod string
}

var methods = [numMethods]methodInfo{
	mGetAvatar:        {"getAvatar", "POST"},
	mCheckWhatsapp:    {"checkWhatsapp", "POST"},
	mGetStateInstance: {"getStateInstance", "GET"},
}

// instanceCounters are guarded by instance.mu.
type instanceCounters struct {
	requests, accepted, tooMany, unauthorized, quotaExceeded, serverErrors, hung, empty int
	wrongHost                                                                           int
	maxInAnySecond                                                                      int
	methods                                                                             [numMethods]MethodStats
	// tooManyAt is only ever appended to (Reset replaces it), so Stats can hand out its
	// prefix without a copy.
	tooManyAt []time.Duration
}

// window is the arrival times (since start) of the last second's requests, oldest first.
type window struct {
	times []time.Duration
	head  int
}

// add records an arrival at t and returns how many arrived in (t-1s, t].
func (w *window) add(t time.Duration) int {
	for w.head < len(w.times) && w.times[w.head] <= t-time.Second {
		w.head++
	}
	if w.head > 1024 && w.head*2 > len(w.times) {
		n := copy(w.times, w.times[w.head:])
		w.times = w.times[:n]
		w.head = 0
	}
	w.times = append(w.times, t)
	return len(w.times) - w.head
}

// chatShards spread the per-chat counters over several mutexes, so concurrent requests for
// different numbers rarely wait for one another.
const chatShards = 32

type chatShard struct {
	mu    sync.Mutex
	chats map[string]*ChatStats
}

// chat returns the counters of key, creating them; the shard's lock must be held.
func (sh *chatShard) chat(key string) *ChatStats {
	c := sh.chats[key]
	if c == nil {
		c = new(ChatStats)
		sh.chats[key] = c
	}
	return c
}

func (s *Simulator) shard(h uint64) *chatShard { return &s.shards[h%chatShards] }

// Stats returns a copy of every counter.
func (s *Simulator) Stats() Stats {
	st := Stats{
		Requests:  int(s.requests.Load()),
		Invalid:   int(s.invalid.Load()),
		Refused:   int(s.refused.Load()),
		Instances: make(map[string]InstanceStats, len(s.instances)),
		Chats:     make(map[string]ChatStats),
	}
	for _, in := range s.instances {
		in.mu.Lock()
		c := in.counters
		in.mu.Unlock()
		is := InstanceStats{
			Requests: c.requests, Accepted: c.accepted, TooMany: c.tooMany, Unauthorized: c.unauthorized, WrongHost: c.wrongHost,
			QuotaExceeded: c.quotaExceeded, ServerErrors: c.serverErrors, Hung: c.hung, Empty: c.empty,
			MaxInAnySecond: c.maxInAnySecond, Methods: make(map[string]MethodStats),
			TooManyAt: c.tooManyAt[:len(c.tooManyAt):len(c.tooManyAt)],
		}
		for m, ms := range c.methods {
			if ms.Requests > 0 {
				is.Methods[methods[m].name] = ms
			}
		}
		st.Instances[in.cfg.ID] = is
	}
	for i := range s.shards {
		sh := &s.shards[i]
		sh.mu.Lock()
		for k, c := range sh.chats {
			st.Chats[k] = *c
		}
		sh.mu.Unlock()
	}
	return st
}

// Chat returns the counters of target (a phone number or chatId in any form ParseTarget takes;
// invalid input is looked up as given).
func (s *Simulator) Chat(target string) ChatStats {
	key := normalize(target)
	sh := s.shard(s.keyHash(key))
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if c := sh.chats[key]; c != nil {
		return *c
	}
	return ChatStats{}
}

// Calls is how many getAvatar requests named target, whatever the answer.
func (s *Simulator) Calls(target string) int { return s.Chat(target).Calls }

// Answers is how many getAvatar answers told target's truth.
func (s *Simulator) Answers(target string) int { return s.Chat(target).Answers }

// normalize is the chat key of target: its chatId when valid, else target itself.
func normalize(target string) string {
	t, err := greenapi.ParseTarget(target)
	if err != nil {
		return target
	}
	return t.ChatID()
}

// Reset zeroes every counter, refills every rate-limit bucket, quota and timeout-first and
// empty-first allowance, and forgets MinGap's last accepted requests, as if the simulator had
// just been made; Start, and so the truth, stay.
func (s *Simulator) Reset() {
	s.requests.Store(0)
	s.invalid.Store(0)
	for _, in := range s.instances {
		in.mu.Lock()
		in.counters = instanceCounters{}
		in.window = window{}
		in.quotaUsed = [numMethods]int{}
		in.limiters = newLimiters(in.cfg)
		in.lastAccepted = [numMethods]time.Duration{}
		in.anyAccepted = [numMethods]bool{}
		in.mu.Unlock()
	}
	for i := range s.shards {
		sh := &s.shards[i]
		sh.mu.Lock()
		clear(sh.chats)
		sh.mu.Unlock()
	}
}
