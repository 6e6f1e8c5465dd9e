// Package deploy holds no code: it is where enrich's deployment files live (the Kubernetes
// manifests in kubernetes/, the /etc/cron.d line in cron/) beside the tests that check them, the
// repository's Dockerfile and the Makefile's build. No cluster or container daemon runs where the
// tests do, so they decode every manifest strictly into the Kubernetes API types, check the
// settings a nightly batch job depends on (deadlines against the config's durations, the token
// from a Secret, non-root, GOMEMLIMIT), run the real binary with each manifest's arguments and
// config against PostgreSQL and the Green API simulator, and check that the image builds the
// binary exactly as `make build` does.
package deploy
