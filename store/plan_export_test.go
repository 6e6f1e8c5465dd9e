package store

import "fmt"

// PlanQueries exposes Plan's statements, with the table filled in, to TestPlanBounded, by name.
func (s *Store) PlanQueries() map[string]string {
	t := s.table.Sanitize()
	return map[string]string{
		"refresh now":   fmt.Sprintf(sqlPlanRefreshNow, t),
		"refresh later": fmt.Sprintf(sqlPlanRefreshLater, t),
		"retries":       fmt.Sprintf(sqlPlanRetries, t),
	}
}
