module github.com/tetherpush/tether/doctor/testdata/dumper

go 1.26.8

require github.com/gomodule/redigo v1.9.3
