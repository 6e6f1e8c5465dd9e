package main

import (
	"testing"

	"github.com/enrich-dev/enrich/internal/pgtest"
)

// TestMain runs the package's tests against a real PostgreSQL (see pgtest), and removes the
// binary the subprocess tests built.
func TestMain(m *testing.M) { pgtest.Main(m, removeBinary) }
