# Helpers the scripts of docs/bench share; sourced, not run.
SECRET=bench-token-secret-0123456789abcdef KEY=bench-api-key-0123456789

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
ticks() { awk '{print $14+$15}' /proc/$1/stat; }               # utime+stime of a live process
busy()  { awk '/^cpu /{print $2+$3+$4+$7+$8+$9}' /proc/stat; } # all cores
