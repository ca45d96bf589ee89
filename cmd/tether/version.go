package main

import (
	"fmt"
	"io"
	"runtime"
	"runtime/debug"
)

// version is the release of this binary, set at build time with
// -ldflags "-X main.version=v1.2.3".
var version = "dev"

// buildInfo describes this binary.
type buildInfo struct {
	Version   string
	GoVersion string
	Revision  string // vcs.revision, "" when unknown
	Time      string // vcs.time
	Modified  bool   // vcs.modified: built from a work tree with changes
	OS, Arch  string
}

// readBuildInfo gathers the build information of the running binary.
func readBuildInfo() buildInfo {
	b := buildInfo{Version: version, GoVersion: runtime.Version(), OS: runtime.GOOS, Arch: runtime.GOARCH}
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return b
	}
	if b.Version == "dev" && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		b.Version = bi.Main.Version // go install …@v1.2.3
	}
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			b.Revision = s.Value
		case "vcs.time":
			b.Time = s.Value
		case "vcs.modified":
			b.Modified = s.Value == "true"
		}
	}
	return b
}

// versionMain runs `tether version`.
func versionMain(args []string, stdout, stderr io.Writer, getenv func(string) string) int {
	f := newFlagSet("version", "version", "Print the version and build information.", getenv, stdout)
	if err := f.parse(args); err != nil {
		return usageError(stderr, "version", err)
	}
	if err := f.noArgs(); err != nil {
		return usageError(stderr, "version", err)
	}
	b := readBuildInfo()
	fmt.Fprintf(stdout, "tether %s\n", b.Version)
	fmt.Fprintf(stdout, "go:       %s\n", b.GoVersion)
	if b.Revision != "" {
		rev := b.Revision
		if b.Modified {
			rev += " (modified)"
		}
		fmt.Fprintf(stdout, "revision: %s\n", rev)
	}
	if b.Time != "" {
		fmt.Fprintf(stdout, "built:    %s\n", b.Time)
	}
	fmt.Fprintf(stdout, "platform: %s/%s\n", b.OS, b.Arch)
	return exitOK
}
