module github.com/tetherpush/tether/doctor/internal/ppcompare

go 1.26.8

require github.com/maruel/panicparse/v2 v2.5.0
