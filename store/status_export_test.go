package store

// StatusQueries exposes Overview's bounded statements to TestStatusPlans, by name. Each takes
// the clock ($1) and, but for oldest_due, a limit ($2).
func (s *Store) StatusQueries() map[string]string {
	return map[string]string{"due": s.est.dueCapped, "oldest_due": s.est.oldestDue, "later": s.est.later}
}
