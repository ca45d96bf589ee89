package main

import (
	"context"
	"fmt"
	"io"
	"time"

	"github.com/tetherpush/tether"
	"github.com/tetherpush/tether/internal/secret"
	"github.com/tetherpush/tether/token"
)

// maxTokenTTL bounds --ttl of `tether token`: a token cannot be revoked, so
// it should not live for ever.
const maxTokenTTL = 10 * 365 * 24 * time.Hour

const tokenAbout = `Print a device token signed with the node's token secret, and nothing else.
The secret is --token-secret, else $TETHER_TOKEN_SECRET, else the token-secret
file of --data-dir (the data dir of a node that has run once).`

// tokenConfig holds the flags of `tether token`.
type tokenConfig struct {
	Device      string
	Groups      []string
	TTL         time.Duration
	TokenSecret string
	DataDir     string
}

func parseToken(args []string, getenv func(string) string, help io.Writer) (tokenConfig, error) {
	var c tokenConfig
	f := newFlagSet("token", "token --device ID [--group G]... [--ttl 24h] [--token-secret S | --data-dir DIR]", tokenAbout, getenv, help)
	f.String(&c.Device, "device", "", "device `id` the token is for (claim sub)")
	f.Strings(&c.Groups, "group", nil, "`group` the device joins when it connects; repeat or separate with commas")
	f.Duration(&c.TTL, "ttl", tether.DefaultTTL, "how long the token is valid")
	f.String(&c.TokenSecret, "token-secret", "", "token `secret` of the node")
	f.String(&c.DataDir, "data-dir", defaultDataDir, "data `directory` of the node, to read its token-secret file")
	if err := f.parse(args); err != nil {
		return c, err
	}
	if err := f.noArgs(); err != nil {
		return c, err
	}
	if c.Device == "" {
		return c, fmt.Errorf("--device is required")
	}
	if !tether.ValidID(c.Device) {
		return c, fmt.Errorf("--device %q: must be 1-128 characters from [A-Za-z0-9._:-]", c.Device)
	}
	for _, g := range c.Groups {
		if !tether.ValidID(g) {
			return c, fmt.Errorf("--group %q: must be 1-128 characters from [A-Za-z0-9._:-]", g)
		}
	}
	if c.TTL < time.Second || c.TTL > maxTokenTTL {
		return c, fmt.Errorf("--ttl %v: must be between 1s and %v", c.TTL, maxTokenTTL)
	}
	return c, nil
}

// tokenMain runs `tether token`.
func tokenMain(_ context.Context, args []string, stdout, stderr io.Writer, getenv func(string) string) int {
	c, err := parseToken(args, getenv, stdout)
	if err != nil {
		return usageError(stderr, "token", err)
	}
	key, err := secret.Resolve(secret.TokenSecretFile, c.TokenSecret, getenv(secret.EnvTokenSecret), c.DataDir)
	if err != nil {
		return failure(stderr, "token", err)
	}
	tok, err := token.Sign([]byte(key), token.Claims{Device: c.Device, Groups: c.Groups, ExpiresAt: time.Now().Add(c.TTL)})
	if err != nil {
		return failure(stderr, "token", err)
	}
	fmt.Fprintln(stdout, tok)
	return exitOK
}
