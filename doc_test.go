package tether_test

import (
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestExportedIdentifiersDocumented fails for each exported identifier of the
// module without a doc comment: funcs, methods (also on unexported types),
// types, vars and consts in every non-test .go file. A type, var or const in
// a documented group declaration counts as documented. Directories named
// testdata or starting with a dot or underscore are skipped (the go command
// ignores them), and so are nested modules (a directory with its own go.mod).
func TestExportedIdentifiersDocumented(t *testing.T) {
	fset := token.NewFileSet()
	files := 0
	err := filepath.WalkDir(".", func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			if path == "." {
				return nil
			}
			name := d.Name()
			if name == "testdata" || strings.HasPrefix(name, ".") || strings.HasPrefix(name, "_") {
				return filepath.SkipDir
			}
			if _, err := os.Stat(filepath.Join(path, "go.mod")); err == nil {
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return nil
		}
		f, err := parser.ParseFile(fset, path, nil, parser.ParseComments|parser.SkipObjectResolution)
		if err != nil {
			t.Error(err)
			return nil
		}
		files++
		for _, u := range undocumented(f) {
			p := fset.Position(u.pos)
			t.Errorf("%s:%d: exported %s has no doc comment", p.Filename, p.Line, u.name)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if files == 0 {
		t.Fatal("no .go files found: the test must run in the module root")
	}
}

// ident is an identifier and where it is declared.
type ident struct {
	name string // Name, or Recv.Name for a method
	pos  token.Pos
}

// undocumented returns the exported identifiers declared at the top level of
// f that have no doc comment.
func undocumented(f *ast.File) []ident {
	var out []ident
	for _, decl := range f.Decls {
		switch d := decl.(type) {
		case *ast.FuncDecl:
			if d.Name.IsExported() && !hasDoc(d.Doc) {
				name := d.Name.Name
				if d.Recv != nil && len(d.Recv.List) == 1 {
					name = recvName(d.Recv.List[0].Type) + "." + name
				}
				out = append(out, ident{name, d.Name.Pos()})
			}
		case *ast.GenDecl:
			for _, spec := range d.Specs {
				var names []*ast.Ident
				var doc *ast.CommentGroup
				switch s := spec.(type) {
				case *ast.TypeSpec:
					names, doc = []*ast.Ident{s.Name}, s.Doc
				case *ast.ValueSpec:
					names, doc = s.Names, s.Doc
				}
				for _, n := range names {
					if n.IsExported() && !hasDoc(doc) && !hasDoc(d.Doc) {
						out = append(out, ident{n.Name, n.Pos()})
					}
				}
			}
		}
	}
	return out
}

// hasDoc reports whether c holds text; directives such as //go:noinline
// alone are not documentation.
func hasDoc(c *ast.CommentGroup) bool {
	return c != nil && strings.TrimSpace(c.Text()) != ""
}

// recvName returns the name of a receiver's type, without pointer or type
// parameters.
func recvName(x ast.Expr) string {
	for {
		switch t := x.(type) {
		case *ast.StarExpr:
			x = t.X
		case *ast.IndexExpr:
			x = t.X
		case *ast.IndexListExpr:
			x = t.X
		case *ast.ParenExpr:
			x = t.X
		case *ast.Ident:
			return t.Name
		default:
			return "?"
		}
	}
}
