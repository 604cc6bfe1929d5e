// Preload for the Portkey gateway: exit when standard input closes.
//
// The launcher (airflow_portkey.testing.gateway) holds the other end of a pipe on the gateway's
// stdin and never writes to it. If the launcher dies without stopping the gateway (a test run
// killed by a timeout or SIGKILL: no finally, no atexit), the pipe closes and the gateway exits
// instead of living on as an orphan that holds a port. Load with: node --import <this file> ...
const leave = () => process.exit(0);
process.stdin.on('end', leave);
process.stdin.on('error', leave);
process.stdin.resume();
