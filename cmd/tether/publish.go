package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/tetherpush/tether"
	"github.com/tetherpush/tether/internal/secret"
)

// Limits of `tether publish`.
const (
	defaultPublishURL     = "http://127.0.0.1:8080"
	defaultPublishTimeout = 10 * time.Second
	maxPublishData        = 64 << 20 // what --data - reads from stdin at most
	maxAnswerBytes        = 1 << 20  // what is read of the server's answer
)

const publishAbout = `Publish one message through a node's HTTP API (POST /v1/messages) and print
the JSON answer. --data is any JSON value; "-" reads it from stdin. The API key
is --api-key, else $TETHER_API_KEY, else the api-key file of --data-dir.`

// publishConfig holds the flags of `tether publish`.
type publishConfig struct {
	Target  string
	Data    string
	TTL     time.Duration
	ID      string
	URL     string
	APIKey  string
	DataDir string
	Timeout time.Duration
}

// publishRequest is the body of POST /v1/messages (SPEC section 6).
type publishRequest struct {
	Target string          `json:"target"`
	Data   json.RawMessage `json:"data"`
	TTL    int64           `json:"ttl_s,omitempty"`
	ID     string          `json:"id,omitempty"`
}

func parsePublish(args []string, getenv func(string) string, help io.Writer) (publishConfig, error) {
	var c publishConfig
	f := newFlagSet("publish", "publish --target T --data JSON [--ttl D] [--id K] [--url URL] [--api-key K | --data-dir DIR]", publishAbout, getenv, help)
	f.String(&c.Target, "target", "", "`target`: device:<id> or group:<id>")
	f.String(&c.Data, "data", "", "message data, a `JSON` value; - reads it from stdin")
	f.Duration(&c.TTL, "ttl", 0, "time to live, whole seconds; 0 = the node's default (24h)")
	f.String(&c.ID, "id", "", "idempotency `key`: a repeated publish with the same key is not stored again")
	f.String(&c.URL, "url", defaultPublishURL, "base `URL` of the node's HTTP API")
	f.String(&c.APIKey, "api-key", "", "API `key` of the node")
	f.String(&c.DataDir, "data-dir", defaultDataDir, "data `directory` of the node, to read its api-key file")
	f.Duration(&c.Timeout, "timeout", defaultPublishTimeout, "give up when the node has not answered within this `duration`")
	if err := f.parse(args); err != nil {
		return c, err
	}
	if err := f.noArgs(); err != nil {
		return c, err
	}
	return c, c.validate()
}

func (c *publishConfig) validate() error {
	if c.Target == "" {
		return errors.New("--target is required (device:<id> or group:<id>)")
	}
	if _, err := tether.ParseTarget(c.Target); err != nil {
		return fmt.Errorf("--target: %s", tether.ErrorMessage(err))
	}
	if c.Data == "" {
		return errors.New(`--data is required: a JSON value such as '{"order":1}', or - to read stdin`)
	}
	if c.TTL < 0 || c.TTL%time.Second != 0 || (c.TTL > 0 && c.TTL < time.Second) {
		return fmt.Errorf("--ttl %v: want a positive number of whole seconds, or 0 for the node's default", c.TTL)
	}
	if c.ID != "" && !tether.ValidID(c.ID) {
		return fmt.Errorf("--id %q: must be 1-128 characters from [A-Za-z0-9._:-]", c.ID)
	}
	u, err := url.Parse(c.URL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("--url %q: want http://host:port or https://host:port", c.URL)
	}
	if c.Timeout <= 0 {
		return fmt.Errorf("--timeout %v: must be positive", c.Timeout)
	}
	return nil
}

// publishMain runs `tether publish`.
func publishMain(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer, getenv func(string) string) int {
	c, err := parsePublish(args, getenv, stdout)
	if err != nil {
		return usageError(stderr, "publish", err)
	}
	data, err := readData(c.Data, stdin)
	if err != nil {
		return usageError(stderr, "publish", err)
	}
	key, err := secret.Resolve(secret.APIKeyFile, c.APIKey, getenv(secret.EnvAPIKey), c.DataDir)
	if err != nil {
		return failure(stderr, "publish", err)
	}
	body, err := json.Marshal(publishRequest{Target: c.Target, Data: data, TTL: int64(c.TTL / time.Second), ID: c.ID})
	if err != nil {
		return failure(stderr, "publish", err)
	}
	answer, err := post(ctx, c, key, body)
	if err != nil {
		return failure(stderr, "publish", err)
	}
	fmt.Fprintln(stdout, strings.TrimSpace(string(answer)))
	return exitOK
}

// readData returns --data, read from stdin for "-", once checked to be
// one JSON value.
func readData(data string, stdin io.Reader) (json.RawMessage, error) {
	b := []byte(data)
	if data == "-" {
		var err error
		if b, err = io.ReadAll(io.LimitReader(stdin, maxPublishData+1)); err != nil {
			return nil, fmt.Errorf("--data -: read stdin: %v", err)
		}
		if len(b) > maxPublishData {
			return nil, fmt.Errorf("--data -: stdin holds more than %d bytes", maxPublishData)
		}
	}
	b = bytes.TrimSpace(b)
	if !json.Valid(b) {
		return nil, fmt.Errorf(`--data: not valid JSON (strings need quotes: '"hello"', objects: '{"order":1}')`)
	}
	return b, nil
}

// post sends body to the node and returns its answer when the status is
// 2xx. Otherwise the error holds the status and the server's message.
func post(ctx context.Context, c publishConfig, key string, body []byte) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, c.Timeout)
	defer cancel()
	endpoint := strings.TrimRight(c.URL, "/") + "/v1/messages"
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, endpoint, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+key)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json")
	req.Header.Set("User-Agent", "tether/"+version)

	tr := http.DefaultTransport.(*http.Transport).Clone()
	defer tr.CloseIdleConnections()
	client := &http.Client{
		Transport: tr,
		// A redirect would resend the API key elsewhere or turn POST into
		// GET; show it instead.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	resp, err := client.Do(req)
	if err != nil {
		if errors.Is(err, context.DeadlineExceeded) {
			return nil, fmt.Errorf("POST %s: no answer within %v (--timeout)", endpoint, c.Timeout)
		}
		return nil, fmt.Errorf("POST %s: %v", endpoint, unwrapURLError(err))
	}
	defer resp.Body.Close()
	answer, err := io.ReadAll(io.LimitReader(resp.Body, maxAnswerBytes))
	if err != nil {
		return nil, fmt.Errorf("POST %s: read answer: %v", endpoint, err)
	}
	if resp.StatusCode/100 != 2 {
		return nil, answerError(resp, answer)
	}
	return answer, nil
}

// answerError describes a non-2xx answer: the status, the server's error
// message and code, Retry-After and a hint for a rejected API key.
func answerError(resp *http.Response, answer []byte) error {
	var e struct {
		Error struct {
			Code    string `json:"code"`
			Message string `json:"message"`
		} `json:"error"`
	}
	msg := fmt.Sprintf("the node answered %s", resp.Status)
	if json.Unmarshal(answer, &e) == nil && e.Error.Message != "" {
		msg += ": " + e.Error.Message
		if e.Error.Code != "" {
			msg += " (" + e.Error.Code + ")"
		}
	} else if text := strings.TrimSpace(string(answer)); text != "" {
		msg += ": " + clipText(text, 512)
	}
	if loc := resp.Header.Get("Location"); loc != "" && resp.StatusCode/100 == 3 {
		msg += "; it redirects to " + loc + ", use that as --url"
	}
	if ra := resp.Header.Get("Retry-After"); ra != "" {
		msg += "; retry after " + ra + " s"
	}
	if resp.StatusCode == http.StatusUnauthorized {
		msg += "; check --api-key, TETHER_API_KEY or --data-dir"
	}
	return errors.New(msg)
}

// unwrapURLError drops the *url.Error wrapper, whose text repeats the
// method and URL.
func unwrapURLError(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}

func clipText(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}
