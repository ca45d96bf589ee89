-- prelude of every unit script (see units.go): the events its units
-- report, which the wrapper (units.lua) appends to the event log as one
-- stream entry after the last unit. events.key is the stream, events.n
-- the number of events, and events[1..] the entry's fields after n: 'e'
-- and the JSON lines of a unit's events, for each unit that has some (a
-- field per unit: concatenating them would cost Redis more than the
-- XADD).
local events = {n = 0}
