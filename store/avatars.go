package store

import (
	"context"
	"fmt"
)

// avatarsTable keeps avatar images once per content (migrations/0009), one per schema.
const avatarsTable = "enrich_avatars"

// sqlSaveAvatar stores an image under its SHA-256; the same image again changes nothing.
const sqlSaveAvatar = `
INSERT INTO %[1]s (sha256, content_type, size, data)
VALUES ($1::text, $2::text, $3::int, $4::bytea)
ON CONFLICT (sha256) DO NOTHING`

// SaveAvatar stores an avatar's bytes under their SHA-256 (hex), once: a default picture shared
// by many numbers is one row of enrich_avatars, named by each row's avatar_sha256.
func (s *Store) SaveAvatar(ctx context.Context, sha256Hex, contentType string, data []byte) error {
	if _, err := s.pool.Exec(ctx, s.q.saveAvatar, sha256Hex, contentType, len(data), data); err != nil {
		return fmt.Errorf("save avatar %s: %w", sha256Hex, err)
	}
	return nil
}
