package http

import (
	"encoding/json"
	"log/slog"
	"net/http"

	"github.com/tetherpush/tether"
)

// statusOf is the one table from application error code to HTTP status.
var statusOf = map[string]int{
	tether.EInvalid:      http.StatusBadRequest,
	tether.EUnauthorized: http.StatusUnauthorized,
	tether.ENotFound:     http.StatusNotFound,
	tether.ETooLarge:     http.StatusRequestEntityTooLarge,
	tether.ERateLimited:  http.StatusTooManyRequests,
	tether.EUnavailable:  http.StatusServiceUnavailable,
	tether.EOverloaded:   http.StatusServiceUnavailable,
	tether.EInternal:     http.StatusInternalServerError,
}

// retryAfter is the Retry-After value, in seconds, sent with 429 and 503.
const retryAfter = "2"

// errorBody is the JSON form of an error (SPEC section 6).
type errorBody struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

func errorJSON(err error) errorBody {
	return errorBody{Code: tether.ErrorCode(err), Message: tether.ErrorMessage(err)}
}

// writeError answers err with its status; internal errors are logged and
// never shown.
func writeError(w http.ResponseWriter, r *http.Request, log *slog.Logger, err error) {
	code := tether.ErrorCode(err)
	status, ok := statusOf[code]
	if !ok {
		status = http.StatusInternalServerError
	}
	switch code {
	case tether.EInternal:
		log.Error("internal error", "method", r.Method, "path", r.URL.Path, "err", err)
	case tether.EUnavailable:
		log.Warn("unavailable", "method", r.Method, "path", r.URL.Path, "err", err)
	}
	if status == http.StatusServiceUnavailable || status == http.StatusTooManyRequests {
		w.Header().Set("Retry-After", retryAfter)
	}
	writeJSON(w, status, map[string]errorBody{"error": errorJSON(err)})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}
