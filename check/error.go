package check

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"syscall"

	"github.com/gobwas/ws"
)

// errorKind sorts a handshake error: "http <status>", "dns", "refused",
// "reset", "local" (out of file descriptors or ports), "tls", "timeout",
// "handshake" (not a WebSocket answer) or "other".
func errorKind(err error) string {
	var status ws.StatusError
	var dnsErr *net.DNSError
	var ne net.Error
	switch {
	case errors.As(err, &status):
		return fmt.Sprintf("http %d", int(status))
	case errors.As(err, &dnsErr):
		return "dns"
	case errors.Is(err, syscall.ECONNREFUSED):
		return "refused"
	case errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.EPIPE), errors.Is(err, io.EOF),
		errors.Is(err, io.ErrUnexpectedEOF):
		return "reset"
	case errors.Is(err, syscall.EMFILE), errors.Is(err, syscall.ENFILE), errors.Is(err, syscall.EADDRNOTAVAIL):
		return "local"
	case isTLS(err):
		return "tls"
	case errors.Is(err, context.DeadlineExceeded), errors.As(err, &ne) && ne.Timeout():
		return "timeout"
	case isHandshake(err):
		return "handshake"
	}
	return "other"
}

func isTLS(err error) bool {
	var (
		rec     tls.RecordHeaderError
		alert   tls.AlertError
		verify  *tls.CertificateVerificationError
		unknown x509.UnknownAuthorityError
		host    x509.HostnameError
		invalid x509.CertificateInvalidError
	)
	return errors.As(err, &rec) || errors.As(err, &alert) || errors.As(err, &verify) ||
		errors.As(err, &unknown) || errors.As(err, &host) || errors.As(err, &invalid)
}

// isHandshake reports an answer that is HTTP 101 but not a valid upgrade.
func isHandshake(err error) bool {
	for _, e := range []error{ws.ErrHandshakeBadProtocol, ws.ErrHandshakeBadMethod, ws.ErrHandshakeBadHost,
		ws.ErrHandshakeBadUpgrade, ws.ErrHandshakeBadConnection, ws.ErrHandshakeBadSecAccept,
		ws.ErrHandshakeBadSecKey, ws.ErrHandshakeBadSecVersion, ws.ErrHandshakeBadSubProtocol,
		ws.ErrHandshakeBadExtensions, ws.ErrMalformedResponse} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}

// closeKind sorts how a connection ended: by the server's close frame, or
// by TCP alone.
func closeKind(st *connState) CloseCount {
	if !st.closeAt.IsZero() {
		return CloseCount{Kind: "close_frame", Code: st.closeCode, Reason: st.closeReason}
	}
	switch {
	case errors.Is(st.endErr, io.EOF), errors.Is(st.endErr, io.ErrUnexpectedEOF):
		return CloseCount{Kind: "eof"}
	case errors.Is(st.endErr, syscall.ECONNRESET):
		return CloseCount{Kind: "reset"}
	}
	reason := ""
	if st.endErr != nil {
		reason = shorten(st.endErr.Error(), maxReason)
	}
	return CloseCount{Kind: "error", Reason: reason}
}
