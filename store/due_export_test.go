package store

// DueQuery exposes the statement Due and DueUpTo count with, to TestDueBounded.
func (s *Store) DueQuery() string { return s.est.dueCapped }
