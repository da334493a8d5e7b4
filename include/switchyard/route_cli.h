/* route_cli: `switchyard route`, the offline explain/tune tool for ops teams. Reads one OpenAI
 * chat request per line on stdin and prints, per request, the decision the proxy would make
 * (route, tier, deployment, score, forcing rule, top classifier features) without contacting
 * any upstream; --calibrate SHARE prints the threshold that sends SHARE of them to the harder
 * tier. */
#ifndef SY_ROUTE_CLI_H
#define SY_ROUTE_CLI_H

#include <stdio.h>

/* argv[0] is "route". Returns the process exit code. */
int sy_route_main(int argc, char **argv, FILE *in, FILE *out);

#endif
