/* The local stack's test container: a static HTTP server that logs every request line to
 * stdout (for `kubectl logs`), answers /healthz (for readiness probes) and anything else with
 * "hello from <hostname>". `webecho say WORDS...` prints WORDS and exits, so `kubectl exec`
 * has a command to run in an image that holds nothing else. The port is $PORT (default 8080). */
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static void stop(int sig) {
  (void)sig;
  _exit(0);
}

int main(int argc, char **argv) {
  if (argc >= 2 && strcmp(argv[1], "say") == 0) {
    for (int i = 2; i < argc; i++) printf("%s%s", argv[i], i + 1 < argc ? " " : "\n");
    return 0;
  }
  signal(SIGTERM, stop);
  signal(SIGINT, stop);
  const char *port_env = getenv("PORT");
  int port = port_env ? atoi(port_env) : 8080;
  char host[256] = "unknown";
  gethostname(host, sizeof host - 1);
  int srv = socket(AF_INET, SOCK_STREAM, 0);
  int one = 1;
  setsockopt(srv, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons((unsigned short)port)};
  addr.sin_addr.s_addr = htonl(INADDR_ANY);
  if (bind(srv, (struct sockaddr *)&addr, sizeof addr) != 0 || listen(srv, 64) != 0) {
    perror("webecho: bind/listen");
    return 1;
  }
  printf("webecho listening on %d\n", port);
  fflush(stdout);
  for (;;) {
    int c = accept(srv, NULL, NULL);
    if (c < 0) continue;
    char buf[2048];
    ssize_t n = read(c, buf, sizeof buf - 1);
    if (n <= 0) {
      close(c);
      continue;
    }
    buf[n] = 0;
    char *eol = strpbrk(buf, "\r\n");
    if (eol) *eol = 0;
    printf("request: %s\n", buf);
    fflush(stdout);
    char body[512];
    if (strncmp(buf, "GET /healthz ", 13) == 0)
      snprintf(body, sizeof body, "ok\n");
    else
      snprintf(body, sizeof body, "hello from %s\n", host);
    char out[1024];
    int len = snprintf(out, sizeof out,
                       "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %zu\r\n"
                       "Connection: close\r\n\r\n%s",
                       strlen(body), body);
    ssize_t w = write(c, out, (size_t)len);
    (void)w;
    close(c);
  }
}
