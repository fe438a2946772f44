// ringstore: one binary. `serve` runs a node; `rebuild` recreates a node's index from
// its disks; put, get, rm, ls, ttl and locate are a client of any node.
#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>
#include <uv.h>

#include <CLI/CLI.hpp>
#include <cstdio>
#include <cctype>
#include <cerrno>
#include <cstring>
#include <nlohmann/json.hpp>
#include <cstdlib>
#include <deque>
#include <iostream>

#include "blobstore/blob_store.h"
#include "node/admin_cli.h"
#include "node/client_cli.h"
#include "node/json_util.h"
#include "node/log.h"
#include "node/server.h"

namespace {

constexpr const char* version_text = "ringstore 0.1.0";

// A host name (as docker-compose gives services) becomes its first IPv4 address: every
// socket binds an IP, and gossip addresses are IP:PORT.
bool resolve_ipv4(std::string* host) {
  in_addr a{};
  if (inet_pton(AF_INET, host->c_str(), &a) == 1) return true;
  addrinfo hints{};
  hints.ai_family = AF_INET;
  addrinfo* res = nullptr;
  if (getaddrinfo(host->c_str(), nullptr, &hints, &res) != 0 || res == nullptr) return false;
  char buf[INET_ADDRSTRLEN];
  inet_ntop(AF_INET, &reinterpret_cast<sockaddr_in*>(res->ai_addr)->sin_addr, buf, sizeof buf);
  freeaddrinfo(res);
  *host = buf;
  return true;
}

bool split_listen(const std::string& listen, std::string* host, int* port) {
  std::size_t colon = listen.rfind(':');
  if (colon == std::string::npos || colon == 0) return false;
  auto p = node::parse_u64(listen.substr(colon + 1));
  if (!p || *p > 65535) return false;
  *host = listen.substr(0, colon);
  if (host->size() > 2 && host->front() == '[' && host->back() == ']') {
    *host = host->substr(1, host->size() - 2);
  }
  *port = static_cast<int>(*p);
  return true;
}

// GET http://ADDR/_/status (5 s deadline).
bool fetch_status(const std::string& addr, std::string* body, std::string* error) {
  node::Reply r;
  if (!node::exchange(addr, "GET", "/_/status", "", &r, error)) return false;
  if (r.status != 200) {
    *error = "no status from " + addr + ": HTTP " + std::to_string(r.status);
    return false;
  }
  *body = std::move(r.body);
  return true;
}

// Prints the members like `nodetool status`: U/D (up/down) and N/J/L (state).
int print_status(const std::string& node_addr) {
  std::string body, error;
  if (!fetch_status(node_addr, &body, &error)) {
    std::fprintf(stderr, "ringstore status: %s\n", error.c_str());
    return 1;
  }
  auto j = nlohmann::json::parse(body, nullptr, false);
  if (!j.is_object() || !j["members"].is_array()) {
    std::fprintf(stderr, "ringstore status: %s did not answer with a status document\n", node_addr.c_str());
    return 1;
  }
  std::printf("Cluster seen from %s (N=%d)\n", node_addr.c_str(), static_cast<int>(node::json_u64(j, "n")));
  std::printf("Status=Up/Down  State=Normal/Joining/Leaving/Left/Removed\n");
  std::printf("--  %-22s %10s %7s %7s %8s  %-32s %s\n", "Address", "Keys", "Tokens", "Owns",
              "Phi", "Host ID", "Zone");
  for (const auto& m : j["members"]) {
    std::string state = node::json_string(m, "state", "normal");
    char st = static_cast<char>(std::toupper(static_cast<unsigned char>(state.empty() ? 'n' : state[0])));
    bool alive = node::json_bool(m, "alive");
    double phi = node::json_double(m, "phi");
    std::string zone = node::json_string(m, "zone");
    std::printf("%c%c  %-22s %10llu %7u %6.1f%% %8.2f  %-32s %s\n", alive ? 'U' : 'D', st,
                node::json_string(m, "addr", "?").c_str(), static_cast<unsigned long long>(node::json_u64(m, "key_count")),
                static_cast<std::uint32_t>(node::json_u64(m, "vnodes")), 100.0 * node::json_double(m, "share"), phi,
                node::json_string(m, "id", "?").c_str(), zone.empty() ? "-" : zone.c_str());
  }
  return 0;
}

struct Signals {
  uv_signal_t term, intr;
};

int serve(node::ServerConfig config) {
  uv_loop_t loop;
  if (uv_loop_init(&loop) != 0) return 1;
  node::Server server(&loop, std::move(config));
  if (Status s = server.start(); !s.is_ok()) {
    node::log::error("cannot start: " + s.message());
    uv_run(&loop, UV_RUN_DEFAULT);  // let the handles opened so far close
    uv_loop_close(&loop);
    return 1;
  }
  server.set_on_fatal([] { uv_kill(uv_os_getpid(), SIGTERM); });
  node::log::info("listening on " + server.address());
  std::printf("ringstore listening on %s\n", server.address().c_str());
  std::fflush(stdout);

  auto* sig = new Signals;
  auto on_signal = [](uv_signal_t* h, int signum) {
    auto* srv = static_cast<node::Server*>(h->data);
    if (srv == nullptr) return;
    node::log::info(std::string("signal ") + (signum == SIGTERM ? "TERM" : "INT") +
                    ": finishing requests in flight");
    auto* sigs = reinterpret_cast<Signals*>(reinterpret_cast<char*>(h) -
                                            (signum == SIGTERM ? offsetof(Signals, term)
                                                               : offsetof(Signals, intr)));
    sigs->term.data = nullptr;
    sigs->intr.data = nullptr;
    // One after the other: libuv runs close callbacks newest first, so freeing Signals
    // in the second handle's callback left the first one's final step reading freed
    // memory (an abort at exit after a loaded run).
    srv->stop([sigs] {
      uv_close(reinterpret_cast<uv_handle_t*>(&sigs->term), [](uv_handle_t* h) {
        auto* s = reinterpret_cast<Signals*>(reinterpret_cast<char*>(h) - offsetof(Signals, term));
        uv_close(reinterpret_cast<uv_handle_t*>(&s->intr), [](uv_handle_t* i) {
          delete reinterpret_cast<Signals*>(reinterpret_cast<char*>(i) - offsetof(Signals, intr));
        });
      });
    });
  };
  int signal_rc = uv_signal_init(&loop, &sig->term);
  if (signal_rc == 0) signal_rc = uv_signal_init(&loop, &sig->intr);
  if (signal_rc != 0) {
    // The node already listens, but could never be stopped cleanly: give up now.
    std::fprintf(stderr, "ringstore serve: cannot watch SIGTERM/SIGINT: %s\n", uv_strerror(signal_rc));
    std::fflush(stderr);
    std::_Exit(1);
  }
  sig->term.data = &server;
  sig->intr.data = &server;
  uv_signal_start(&sig->term, on_signal, SIGTERM);
  uv_signal_start(&sig->intr, on_signal, SIGINT);
  uv_run(&loop, UV_RUN_DEFAULT);
  int rc = uv_loop_close(&loop);
  ASSERT(rc == 0);  // every handle was closed
  node::log::info("stopped");
  return server.exit_code();
}

// ---- the client commands (node/client_cli.h) ----

constexpr const char* client_exit_codes =
    "Exit codes: 0 ok; 1 error (node unreachable or stalled 30 s, bad or cut answer, 5xx "
    "such as 503 or 507, local I/O, a body whose length or MD5 does not match); 2 usage "
    "error; 3 not found (404; locate: no replica holds the key); 4 any other 4xx (400 bad "
    "key, 413 too large, ...). Errors are one line on stderr: \"ringstore CMD: reason\".";

struct ClientCommands {
  // One --node per command: CLI11 applies RINGSTORE_NODE to every subcommand's option,
  // so a shared variable would take the environment over the parsed command's flag.
  std::deque<std::string> nodes;
  node::PutOptions put;
  std::string key, file, prefix;
  std::uint64_t ttl_s = 0;
  std::uint32_t page_keys = node::list_page_keys;
  CLI::Option* put_ttl = nullptr;
  CLI::Option* ttl_seconds = nullptr;
  CLI::App *put_cmd, *get_cmd, *rm_cmd, *ls_cmd, *ttl_cmd, *locate_cmd;
};

CLI::App* add_client_command(CLI::App& app, ClientCommands* c, const char* name, const char* what) {
  CLI::App* cmd = app.add_subcommand(name, what);
  c->nodes.push_back(node::ClientOptions().node);
  cmd->add_option("--node", c->nodes.back(), "HOST:PORT of any node, IPv4 or localhost "
                  "(default 127.0.0.1:3000)")
      ->envname("RINGSTORE_NODE")->capture_default_str();
  cmd->footer(client_exit_codes);
  return cmd;
}

void add_client_commands(CLI::App& app, ClientCommands* c) {
  c->put_cmd = add_client_command(app, c, "put", "store FILE (or stdin: -) under KEY; prints "
                                  "{\"etag\",\"version\"}");
  c->put_cmd->add_option("KEY", c->key, "the key")->required();
  c->put_cmd->add_option("FILE", c->file, "the value: a file, or - for stdin (sent chunked)")->required();
  c->put_ttl = c->put_cmd->add_option("--ttl", c->ttl_s, "seconds until the value expires "
                                      "(sent as X-Ringstore-TTL)");
  c->put_cmd->add_option("--content-type", c->put.content_type, "Content-Type stored with the value");
  c->get_cmd = add_client_command(app, c, "get", "write KEY's value to FILE (atomically: a "
                                  "temp file renamed once the length and MD5 match) or stdout");
  c->get_cmd->add_option("KEY", c->key, "the key")->required();
  c->get_cmd->add_option("FILE", c->file, "where to write it; omitted or -: stdout");
  c->rm_cmd = add_client_command(app, c, "rm", "delete KEY (a key that is absent is no error)");
  c->rm_cmd->add_option("KEY", c->key, "the key")->required();
  c->ls_cmd = add_client_command(app, c, "ls", "print every key under PREFIX, one a line, in "
                                 "byte order (all pages)");
  c->ls_cmd->add_option("PREFIX", c->prefix, "the prefix; omitted: every key");
  c->ls_cmd->add_option("--page-keys", c->page_keys, "keys asked for per request")
      ->capture_default_str()->check(CLI::Range(1u, 10'000u));
  c->ttl_cmd = add_client_command(app, c, "ttl", "print KEY's expiry (X-Ringstore-Expires, "
                                  "else \"no expiry\"); with SECONDS, set it by writing the "
                                  "value again: a GET and a PUT, so a new version, and a write "
                                  "made in between is overwritten");
  c->ttl_cmd->add_option("KEY", c->key, "the key")->required();
  c->ttl_seconds = c->ttl_cmd->add_option("SECONDS", c->ttl_s, "seconds until it expires");
  c->locate_cmd = add_client_command(app, c, "locate", "print KEY's ring position, preference "
                                     "list and each replica's version");
  c->locate_cmd->add_option("KEY", c->key, "the key")->required();
}

// The exit code of the client command that was parsed, or -1 when none was.
int run_client_command(ClientCommands& c) {
  node::ClientOptions o;
  std::size_t i = 0;
  for (CLI::App* cmd : {c.put_cmd, c.get_cmd, c.rm_cmd, c.ls_cmd, c.ttl_cmd, c.locate_cmd}) {
    if (cmd->parsed()) o.node = c.nodes[i];
    i++;
  }
  std::optional<std::uint64_t> ttl;
  if (c.put_cmd->parsed()) {
    if (c.put_ttl->count() > 0) c.put.ttl_s = c.ttl_s;
    if (c.put.content_type.find_first_of("\r\n") != std::string::npos) {
      std::fprintf(stderr, "ringstore put: --content-type must be one line\n");
      return node::exit_usage;
    }
    return node::put_command(o, c.key, c.file, c.put);
  }
  if (c.get_cmd->parsed()) return node::get_command(o, c.key, c.file);
  if (c.rm_cmd->parsed()) return node::rm_command(o, c.key);
  if (c.ls_cmd->parsed()) return node::ls_command(o, c.prefix, c.page_keys);
  if (c.ttl_cmd->parsed()) {
    if (c.ttl_seconds->count() > 0) ttl = c.ttl_s;
    return node::ttl_command(o, c.key, ttl);
  }
  if (c.locate_cmd->parsed()) return node::locate_command(o, c.key);
  return -1;
}

}  // namespace

int main(int argc, char** argv) {
  signal(SIGPIPE, SIG_IGN);
  CLI::App app{"ringstore: a masterless, Dynamo-style blob store"};
  app.set_version_flag("--version", version_text);
  app.require_subcommand(1);
  std::string log_level = "info";
  app.add_option("--log-level", log_level, "debug, info, warn or error")
      ->envname("RINGSTORE_LOG_LEVEL")
      ->check(CLI::IsMember({"debug", "info", "warn", "error"}));

  node::ServerConfig config;
  std::string listen = "127.0.0.1:3000";
  std::string secret_file;
  std::string sync_mode = "always";
  auto* serve_cmd = app.add_subcommand("serve", "run a node");
  serve_cmd->add_option("--listen", listen, "HOST:PORT to serve HTTP on (port 0: any free port)")
      ->envname("RINGSTORE_LISTEN");
  serve_cmd->add_option("--data", config.data_dir, "data directory (index.db, default disk)")
      ->envname("RINGSTORE_DATA")->required();
  serve_cmd->add_option("--disk", config.disks, "a disk directory; repeat for several")
      ->envname("RINGSTORE_DISK")->delimiter(',');
  serve_cmd->add_option("--replicas", config.quorum.n, "copies of each key (N)")
      ->envname("RINGSTORE_REPLICAS")->check(CLI::Range(1, 9));
  serve_cmd->add_option("--read-quorum", config.quorum.r, "replicas a GET waits for (R)")
      ->envname("RINGSTORE_READ_QUORUM")->check(CLI::Range(1, 9));
  serve_cmd->add_option("--write-quorum", config.quorum.w, "durable copies before a PUT is acknowledged (W)")
      ->envname("RINGSTORE_WRITE_QUORUM")->check(CLI::Range(1, 9));
  serve_cmd->add_option("--replica-timeout-ms", config.quorum.replica_timeout_ms,
                        "how long a replica may take to answer")
      ->envname("RINGSTORE_REPLICA_TIMEOUT_MS")->check(CLI::Range(50, 600'000));
  serve_cmd->add_option("--max-version-drift-ms", config.version_drift_ms,
                        "refuse versions further ahead of this node's clock (replica writes, "
                        "hints, repairs, transfers)")
      ->envname("RINGSTORE_MAX_VERSION_DRIFT_MS")->check(CLI::Range(1'000, 86'400'000));
  serve_cmd->add_option("--id-conflict-window-ms", config.id_conflict_window_ms,
                        "a node that finds another live process under its id (a copied data dir) "
                        "this soon after its start stops; an older one keeps the id")
      ->envname("RINGSTORE_ID_CONFLICT_WINDOW_MS")->check(CLI::Range(1'000, 600'000));
  serve_cmd->add_option("--read-repairs-per-sec", config.quorum.read_repairs_per_sec,
                        "replicas this node's reads may repair per second (the rest: anti-entropy)")
      ->envname("RINGSTORE_READ_REPAIRS_PER_SEC")->check(CLI::Range(1, 1'000'000));
  serve_cmd->add_option("--seeds", config.seeds, "gossip seeds, HOST:PORT (comma-separated or repeated)")
      ->envname("RINGSTORE_SEEDS")->delimiter(',');
  serve_cmd->add_option("--secret-file", secret_file, "file holding the cluster secret "
                        "(else RINGSTORE_SECRET)")
      ->envname("RINGSTORE_SECRET_FILE");
  serve_cmd->add_flag("--insecure", config.insecure, "run without a cluster secret (tests only)")
      ->envname("RINGSTORE_INSECURE");
  serve_cmd->add_option("--zone", config.zone, "failure zone; replicas spread over zones first")
      ->envname("RINGSTORE_ZONE");
  serve_cmd->add_option("--vnodes", config.vnodes, "tokens on the ring (weight)")
      ->envname("RINGSTORE_VNODES")->check(CLI::Range(1u, ring::limits::vnodes_per_node_max));
  serve_cmd->add_option("--gossip-interval-ms", config.gossip_interval_ms, "gossip round length")
      ->envname("RINGSTORE_GOSSIP_INTERVAL_MS")->check(CLI::Range(10, 60'000));
  serve_cmd->add_option("--phi-convict", config.phi_convict, "phi above which a peer is down")
      ->envname("RINGSTORE_PHI_CONVICT")->check(CLI::Range(1.0, 100.0));
  serve_cmd->add_option("--hint-interval-ms", config.hint_interval_ms, "how often hints are offered")
      ->envname("RINGSTORE_HINT_INTERVAL_MS")->check(CLI::Range(10, 600'000));
  serve_cmd->add_option("--anti-entropy-interval-ms", config.anti_entropy.interval_ms,
                        "pause between anti-entropy passes (0: off)")
      ->envname("RINGSTORE_ANTI_ENTROPY_INTERVAL_MS")->check(CLI::Range(0, 86'400'000));
  serve_cmd->add_option("--anti-entropy-keys-per-sec", config.anti_entropy.keys_per_sec,
                        "keys anti-entropy may transfer per second")
      ->envname("RINGSTORE_ANTI_ENTROPY_KEYS_PER_SEC")->check(CLI::Range(1, 1'000'000));
  serve_cmd->add_option("--tombstone-grace-s", config.anti_entropy.tombstone_grace_s,
                        "age after which a tombstone every replica holds is purged")
      ->envname("RINGSTORE_TOMBSTONE_GRACE_S")->check(CLI::Range(0ull, 10ull * 365 * 86400));
  serve_cmd->add_option("--transfer-keys-per-s", config.transfer_keys_per_s,
                        "keys a membership transfer sends per second (0: no limit)")
      ->envname("RINGSTORE_TRANSFER_KEYS_PER_S");
  serve_cmd->add_option("--hint-window-ms", config.hints.window_ms,
                        "a target down longer than this gets no new hints (default 3 h)")
      ->envname("RINGSTORE_HINT_WINDOW_MS")->check(CLI::Range(0ull, 30ull * 24 * 3600 * 1000));
  serve_cmd->add_option("--hints-max-per-target", config.hints.per_target_max,
                        "hints held for one target; beyond it a miss is left to anti-entropy")
      ->envname("RINGSTORE_HINTS_MAX_PER_TARGET");
  serve_cmd->add_option("--hints-max", config.hints.total_max, "hints held in all")
      ->envname("RINGSTORE_HINTS_MAX");
  serve_cmd->add_option("--hint-rate", config.hints.deliveries_per_s, "hints delivered per second")
      ->envname("RINGSTORE_HINT_RATE")->check(CLI::Range(1u, 1'000'000u));
  serve_cmd->add_option("--repair-keys-per-s", config.repair.keys_per_s,
                        "lost copies (failed disk, bad checksum) fetched from replicas per second")
      ->envname("RINGSTORE_REPAIR_KEYS_PER_S")->check(CLI::Range(0u, 1'000'000u));
  serve_cmd->add_option("--scrub-bytes-per-s", config.scrub.bytes_per_s,
                        "background checksum scrub: bytes read per second (0: off)")
      ->envname("RINGSTORE_SCRUB_BYTES_PER_S");
  serve_cmd->add_option("--scrub-files-per-s", config.scrub.files_per_s,
                        "background checksum scrub: files verified per second (0: off)")
      ->envname("RINGSTORE_SCRUB_FILES_PER_S");
  serve_cmd->add_option("--sync", sync_mode,
                        "when a write reaches the disk: always (synced before it is "
                        "acknowledged) or periodic (every --sync-period-ms; a power cut can "
                        "lose that much)")
      ->envname("RINGSTORE_SYNC")->check(CLI::IsMember({"always", "periodic"}));
  serve_cmd->add_option("--sync-period-ms", config.sync.period_ms,
                        "how often a sync round makes the files written since durable (--sync periodic: "
                        "the unsynced writes; always: the files the commit log holds)")
      ->envname("RINGSTORE_SYNC_PERIOD_MS")->check(CLI::Range(10ull, 60'000ull));
  serve_cmd->add_option("--cache-bytes", config.cache_bytes,
                        "memory for hot small values (0: no cache)")
      ->envname("RINGSTORE_CACHE_BYTES");
  node::ServerLimits& l = config.limits;
  serve_cmd->add_option("--body-max-bytes", l.body_bytes_max, "largest value accepted")
      ->envname("RINGSTORE_BODY_MAX_BYTES")->check(CLI::PositiveNumber);
  serve_cmd->add_option("--header-max-bytes", l.header_bytes_max, "largest request head")
      ->envname("RINGSTORE_HEADER_MAX_BYTES")->check(CLI::Range(1024, 1 << 20));
  serve_cmd->add_option("--connections-max", l.connections_max, "open client connections")
      ->envname("RINGSTORE_CONNECTIONS_MAX")->check(CLI::Range(1, 1 << 20));
  serve_cmd->add_option("--idle-timeout-ms", l.idle_timeout_ms, "keep-alive idle limit")
      ->envname("RINGSTORE_IDLE_TIMEOUT_MS")->check(CLI::Range(50, 3'600'000));
  serve_cmd->add_option("--header-timeout-ms", l.header_timeout_ms, "time to send a request head")
      ->envname("RINGSTORE_HEADER_TIMEOUT_MS")->check(CLI::Range(50, 3'600'000));
  serve_cmd->add_option("--body-timeout-ms", l.body_timeout_ms, "longest pause inside a body")
      ->envname("RINGSTORE_BODY_TIMEOUT_MS")->check(CLI::Range(50, 3'600'000));
  serve_cmd->add_option("--send-timeout-ms", l.send_timeout_ms, "longest stall reading a response")
      ->envname("RINGSTORE_SEND_TIMEOUT_MS")->check(CLI::Range(50, 3'600'000));

  std::string rebuild_data;
  std::vector<std::string> rebuild_disks;
  auto* rebuild_cmd = app.add_subcommand("rebuild", "recreate the index from the disks alone");
  rebuild_cmd->add_option("--data", rebuild_data, "data directory")
      ->envname("RINGSTORE_DATA")->required();
  rebuild_cmd->add_option("--disk", rebuild_disks, "a disk directory; repeat for several")
      ->envname("RINGSTORE_DISK")->delimiter(',');

  std::string status_node = "127.0.0.1:3000";
  auto* status_cmd = app.add_subcommand("status", "print the members as one node sees them");
  status_cmd->add_option("--node", status_node, "HOST:PORT of any node")->envname("RINGSTORE_NODE");

  std::string member_node, member_host = "127.0.0.1:3000", member_secret_file;
  unsigned leave_timeout_s = 3600;
  auto* leave_cmd = app.add_subcommand("leave", "stream a node's ranges to their next owners, "
                                       "then retire it (waits until it has left)");
  leave_cmd->add_option("--node", member_node, "HOST:PORT of the node that leaves")->required();
  leave_cmd->add_option("--timeout-s", leave_timeout_s, "how long to wait for the transfer");
  auto* remove_cmd = app.add_subcommand("remove", "retire a dead node; the others "
                                        "re-replicate its keys from the remaining copies");
  remove_cmd->add_option("--node", member_node, "id of the dead node (32 hex digits, as in status)")
      ->required();
  remove_cmd->add_option("--host", member_host, "HOST:PORT of any live node")->envname("RINGSTORE_NODE");
  for (auto* cmd : {leave_cmd, remove_cmd}) {
    cmd->add_option("--secret-file", member_secret_file, "file holding the cluster secret "
                    "(else RINGSTORE_SECRET)")->envname("RINGSTORE_SECRET_FILE");
  }

  ClientCommands client;
  add_client_commands(app, &client);

  // CLI11_PARSE would exit with CLI11's own code per error (105, 106, ...); scripts get
  // one: 2 for any usage error, as the client commands document.
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? 0 : node::exit_usage;  // --help and --version are 0
  }
  config.sync.mode = sync_mode == "periodic" ? blobstore::SyncMode::periodic : blobstore::SyncMode::always;
  node::log::Level level;
  node::log::parse_level(log_level, &level);
  node::log::set_level(level);

  if (serve_cmd->parsed()) {
    if (!split_listen(listen, &config.host, &config.port)) {
      std::fprintf(stderr, "ringstore: --listen must be HOST:PORT, got '%s'\n", listen.c_str());
      return 2;
    }
    if (!resolve_ipv4(&config.host)) {
      std::fprintf(stderr, "ringstore: cannot resolve --listen host '%s'\n", config.host.c_str());
      return 2;
    }
    for (std::string& seed : config.seeds) {
      std::string host;
      int port = 0;
      if (!split_listen(seed, &host, &port) || !resolve_ipv4(&host)) {
        // A seed that does not resolve yet (its container is not up) is skipped, not fatal.
        std::fprintf(stderr, "ringstore: ignoring seed '%s': not HOST:PORT or unresolvable\n", seed.c_str());
        seed.clear();
        continue;
      }
      seed = host + ":" + std::to_string(port);
    }
    std::erase(config.seeds, std::string());
    if (l.header_timeout_ms >= l.idle_timeout_ms) l.idle_timeout_ms = l.header_timeout_ms + 1;
    if (!secret_file.empty()) {
      std::FILE* f = std::fopen(secret_file.c_str(), "r");
      if (f == nullptr) {
        std::fprintf(stderr, "ringstore: cannot read --secret-file %s\n", secret_file.c_str());
        return 2;
      }
      char buf[4096];
      std::size_t n = std::fread(buf, 1, sizeof buf, f);
      std::fclose(f);
      config.secret.assign(buf, n);
      while (!config.secret.empty() && std::isspace(static_cast<unsigned char>(config.secret.back()))) {
        config.secret.pop_back();
      }
    } else if (const char* env = std::getenv("RINGSTORE_SECRET")) {
      config.secret = env;
    }
    if (config.secret.empty() && !config.insecure) {
      std::fprintf(stderr, "ringstore: no cluster secret: set RINGSTORE_SECRET, --secret-file, "
                           "or pass --insecure\n");
      return 2;
    }
    if (config.quorum.r > config.quorum.n || config.quorum.w > config.quorum.n) {
      std::fprintf(stderr, "ringstore: --read-quorum and --write-quorum must not exceed --replicas\n");
      return 2;
    }
    return serve(std::move(config));
  }
  if (status_cmd->parsed()) return print_status(status_node);
  if (int rc = run_client_command(client); rc >= 0) return rc;
  if (leave_cmd->parsed() || remove_cmd->parsed()) {
    std::string secret, error;
    if (!node::load_secret(member_secret_file, &secret, &error)) {
      std::fprintf(stderr, "ringstore: %s\n", error.c_str());
      return 2;
    }
    if (leave_cmd->parsed()) return node::leave_command(member_node, secret, leave_timeout_s);
    return node::remove_command(member_node, member_host, secret);
  }
  if (rebuild_cmd->parsed()) {
    auto r = blobstore::rebuild_index(rebuild_data, rebuild_disks);
    if (!r.is_ok()) {
      std::fprintf(stderr, "ringstore rebuild: %s\n", r.status().message().c_str());
      return 1;
    }
    std::printf("rebuilt index: %llu files (%llu written out from the commit log), %llu keys, "
                "%llu skipped\n",
                static_cast<unsigned long long>(r.value().files),
                static_cast<unsigned long long>(r.value().from_log),
                static_cast<unsigned long long>(r.value().keys),
                static_cast<unsigned long long>(r.value().skipped));
    return 0;
  }
  return 2;
}
