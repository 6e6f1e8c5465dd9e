package deploy

import (
	"testing"

	"github.com/enrich-dev/enrich/internal/pgtest"
)

// TestMain runs the tests against a real PostgreSQL (internal/pgtest): the manifests' commands
// run the real binary, which needs a database to connect to.
func TestMain(m *testing.M) { pgtest.Main(m, removeBinary) }
