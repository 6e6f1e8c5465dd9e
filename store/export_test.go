package store

// FencedQueries exposes the statements fenced on a claim (id, lease_token, owner) to
// TestWritePlan, by name.
func (s *Store) FencedQueries() map[string]string {
	return map[string]string{
		"complete": s.q.complete, "reschedule": s.q.reschedule, "fail": s.q.fail,
		"release": s.q.release, "renew": s.q.renew,
	}
}
