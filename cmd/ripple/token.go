package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/ripple-sync/ripple/gateway/auth"
	"github.com/ripple-sync/ripple/schema"
)

// devSecretFile is where `ripple dev` keeps the HS256 secret it generated.
func devSecretFile(dir string) string { return filepath.Join(dir, "jwt-secret") }

// loadSecret returns the HS256 secret from the flag/environment, else from
// the dev directory.
func loadSecret(flagValue, devDir string) ([]byte, error) {
	if flagValue != "" {
		return []byte(flagValue), nil
	}
	b, err := os.ReadFile(devSecretFile(devDir))
	if err != nil {
		return nil, fmt.Errorf("%w: no --jwt-secret (RIPPLE_JWT_SECRET) and no dev secret at %s (run `ripple dev` first): %v",
			errUsage, devSecretFile(devDir), err)
	}
	return []byte(strings.TrimSpace(string(b))), nil
}

func runToken(ctx context.Context, env *cliEnv, args []string) error {
	fs := newFlagSet(env, "token", "--org O [--org O2] [--write] [--ttl 1h]")
	var orgs, writeOrgs, tables stringList
	fs.Var(&orgs, "org", "organisation the token may read (repeatable)")
	fs.Var(&writeOrgs, "write-org", "organisation the token may write (repeatable)")
	fs.Var(&tables, "table", "restrict the token to these tables (repeatable; default all)")
	write := fs.Bool("write", false, "also allow writing every --org")
	sub := fs.String("sub", "dev-user", "the token's subject (user id)")
	ttl := fs.Duration("ttl", time.Hour, "how long the token is valid")
	secret := fs.String("jwt-secret", "", "HS256 signing secret (default: the one `ripple dev` generated)")
	devDir := fs.String("dev-dir", ".ripple/dev", "directory of `ripple dev` state")
	if _, err := parseFlags(env, fs, args); err != nil {
		return err
	}
	if len(orgs) == 0 {
		fs.Usage()
		return fmt.Errorf("%w: at least one --org is required", errUsage)
	}
	key, err := loadSecret(*secret, *devDir)
	if err != nil {
		return err
	}
	if *write {
		writeOrgs = append(writeOrgs, orgs...)
	}
	tok, err := auth.SignHS256(key, schema.Claims{
		Subject:   *sub,
		Orgs:      orgs,
		WriteOrgs: writeOrgs,
		Tables:    tables,
		Expires:   time.Now().Add(*ttl),
	})
	if err != nil {
		return err
	}
	fmt.Fprintln(env.stdout, tok)
	return nil
}
