// Command enrich fills a PostgreSQL table of phone numbers with WhatsApp presence and avatar
// links from Green API's GetAvatar. See README.md, or run `enrich --help`.
package main

import (
	"context"
	"errors"
	"flag"
	"os"
	"os/signal"
	"sync/atomic"
	"syscall"
	"time"
	_ "time/tzdata" // greenapi.time_zone works in a static binary on a host without zoneinfo

	"github.com/enrich-dev/enrich/enrich"
	"github.com/jackc/pgx/v5/pgconn"
)

// Exit codes, documented in README.md.
const (
	exitOK         = 0
	exitConfig     = 1
	exitNoInstance = 2
	exitDatabase   = 3
	// exitStalled: nothing moved for run.stall_timeout; the rows were given back.
	exitStalled = 4
)

// hurryExit bounds how long the process lives after a second signal, whatever it is doing: the
// run cuts its calls at once and writes within enrich.HurriedWrite, so this only catches a
// command that does not listen.
const hurryExit = 5 * time.Second

func main() {
	// The first SIGINT/SIGTERM asks the command to stop gracefully (a run lets calls in flight
	// finish within shutdown_grace). The second tells it to hurry: a run cuts its calls in
	// flight, writes the answers it has, gives the rest back and prints its summary, and the
	// process exits within hurryExit in any case. The third exits at once (leases expire and
	// the rows come back).
	sigs := make(chan os.Signal, 3)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	ctx, cancel := context.WithCancelCause(context.Background())
	hurry := make(chan struct{})
	var got atomic.Value
	go func() {
		s := <-sigs
		got.Store(s)
		cancel(signalStop{s})
		s = <-sigs
		close(hurry)
		backstop := time.NewTimer(hurryExit)
		select {
		case s = <-sigs:
		case <-backstop.C:
		}
		os.Exit(signalExit(s))
	}()
	err := run(ctx, os.Args[1:], stdio{in: os.Stdin, out: os.Stdout, err: os.Stderr, getenv: os.Getenv, hurry: hurry})
	sig, _ := got.Load().(os.Signal)
	os.Exit(exitCode(err, sig))
}

// exitCode maps a run's error, and the signal that stopped it if any, to the exit code.
func exitCode(err error, sig os.Signal) int {
	var ce *configError
	switch {
	case sig != nil && (err == nil || errors.Is(err, enrich.ErrInterrupted) || errors.Is(err, context.Canceled) ||
		canceledQuery(err)):
		return signalExit(sig)
	case err == nil, errors.Is(err, flag.ErrHelp):
		return exitOK
	case errors.As(err, &ce), errors.Is(err, enrich.ErrConfiguration):
		return exitConfig
	case errors.Is(err, enrich.ErrNoInstance):
		return exitNoInstance
	case errors.Is(err, enrich.ErrDatabase):
		return exitDatabase
	case errors.Is(err, enrich.ErrStalled):
		return exitStalled
	case errors.Is(err, enrich.ErrInterrupted):
		return 128 + int(syscall.SIGTERM)
	}
	return exitConfig
}

// canceledQuery reports PostgreSQL's "canceling statement due to user request" (57014): the pool
// cancels a statement on the server when its context ends, so a query a signal cut ends so, not
// with context.Canceled.
func canceledQuery(err error) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && pgErr.Code == "57014"
}

// signalExit is the shell's convention: 128 + the signal number (130 for SIGINT, 143 for
// SIGTERM).
func signalExit(s os.Signal) int {
	if n, ok := s.(syscall.Signal); ok {
		return 128 + int(n)
	}
	return 1
}
