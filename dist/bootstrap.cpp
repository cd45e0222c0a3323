#include "dist/bootstrap.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <thread>
#include <utility>

#include "kernels/check.h"

extern char** environ;

namespace remoe::dist {

// --- the launcher's environment ----------------------------------------------------------

Env process_env() {
  Env env;
  for (char** e = environ; e && *e; ++e) {
    const char* eq = std::strchr(*e, '=');
    if (eq) env.emplace(std::string(*e, size_t(eq - *e)), std::string(eq + 1));
  }
  return env;
}

namespace {

constexpr size_t kMaxString = 1024;  // token, hostname, device name on the wire

struct Launcher {
  const char* name;
  const char* rank;
  const char* size;
  const char* local_rank;
  const char* local_size;  // optional, checked when present
};

// Innermost first (see bootstrap.h).
constexpr Launcher kLaunchers[] = {
    {"torchrun", "RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE"},
    {"mpirun", "OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_LOCAL_RANK",
     "OMPI_COMM_WORLD_LOCAL_SIZE"},
    {"srun", "SLURM_PROCID", "SLURM_NTASKS", "SLURM_LOCALID", nullptr},
};

const std::string* lookup(const Env& env, const char* key) {
  const auto it = env.find(key);
  return it == env.end() ? nullptr : &it->second;
}

int64_t parse_int(const Env& env, const char* key, int64_t lo, int64_t hi, const char* expected) {
  const std::string& s = *lookup(env, key);
  int64_t v = 0;
  size_t i = 0;
  bool ok = !s.empty() && s.size() <= 12;
  for (; ok && i < s.size(); ++i) {
    ok = s[i] >= '0' && s[i] <= '9';
    v = v * 10 + (s[i] - '0');
  }
  REMOE_CHECK(ok && v >= lo && v <= hi, "launch environment: ", key, "='", s, "' is not ",
              expected);
  return v;
}

std::string token_of(const Launcher& l, const Env& env, std::string* source) {
  auto take = [&](const char* key) -> const std::string* {
    const std::string* v = lookup(env, key);
    if (v && !v->empty()) *source = key;
    return v && !v->empty() ? v : nullptr;
  };
  if (const std::string* v = take("REMOE_JOB_TOKEN")) return *v;
  const std::string name = l.name;
  if (name == "torchrun")
    if (const std::string* v = take("TORCHELASTIC_RUN_ID")) return *v;
  if (name == "mpirun") {
    if (const std::string* v = take("PMIX_NAMESPACE")) return *v;
    if (const std::string* v = take("OMPI_MCA_ess_base_jobid")) return *v;
  }
  if (name == "srun")
    if (const std::string* job = take("SLURM_JOB_ID")) {
      const std::string* step = lookup(env, "SLURM_STEP_ID");
      if (step) *source = "SLURM_JOB_ID.SLURM_STEP_ID";
      return step ? *job + "." + *step : *job;
    }
  return "";
}

}  // namespace

LaunchInfo launch_info(const Env& env) {
  LaunchInfo info;
  const Launcher* found = nullptr;
  for (const Launcher& l : kLaunchers) {
    const char* keys[] = {l.rank, l.size, l.local_rank};
    std::string set, unset;
    for (const char* k : keys) {
      std::string& list = lookup(env, k) ? set : unset;
      list += (list.empty() ? "" : ", ") + std::string(k);
    }
    if (set.empty()) continue;
    REMOE_CHECK(unset.empty(), "launch environment: ", l.name, "'s variables are partial: ", set,
                " set but ", unset, " not (", l.name, " sets all of ", l.rank, ", ", l.size, ", ",
                l.local_rank, ")");
    found = &l;
    break;
  }
  if (!found) return info;  // no launcher: a world of one

  const Launcher& l = *found;
  info.launcher = l.name;
  constexpr int64_t kMaxWorld = 1 << 20;
  info.world_size = int(parse_int(env, l.size, 1, kMaxWorld, "a world size ≥ 1"));
  info.rank = int(parse_int(env, l.rank, 0, kMaxWorld, "a rank ≥ 0"));
  info.local_rank = int(parse_int(env, l.local_rank, 0, kMaxWorld, "a local rank ≥ 0"));
  REMOE_CHECK(info.rank < info.world_size, "launch environment: ", l.rank, "=", info.rank,
              " is not below ", l.size, "=", info.world_size);
  REMOE_CHECK(info.local_rank < info.world_size, "launch environment: ", l.local_rank, "=",
              info.local_rank, " is not below ", l.size, "=", info.world_size);
  if (l.local_size && lookup(env, l.local_size)) {
    const int64_t local_size = parse_int(env, l.local_size, 1, kMaxWorld, "a size ≥ 1");
    REMOE_CHECK(info.local_rank < local_size && local_size <= info.world_size,
                "launch environment: ", l.local_rank, "=", info.local_rank, ", ", l.local_size,
                "=", local_size, " and ", l.size, "=", info.world_size,
                " are inconsistent (expected local rank < local size ≤ world size)");
  }

  const bool torchrun = info.launcher == "torchrun";
  if (info.world_size > 1 || torchrun) {
    const char* why = torchrun ? "torchrun sets it" : "rank 0's host and a free port, for the "
                                                      "rendezvous of several ranks";
    for (const char* k : {"MASTER_ADDR", "MASTER_PORT"})
      REMOE_CHECK(lookup(env, k) && !lookup(env, k)->empty(), "launch environment: ", l.name,
                  " with ", l.size, "=", info.world_size, " but ", k, " is not set (", why, ")");
    info.master_addr = *lookup(env, "MASTER_ADDR");
    info.master_port = int(parse_int(env, "MASTER_PORT", 1, 65535, "a port in 1..65535"));
    info.bootstrap_port = info.master_port;
    const std::string* agent_store = lookup(env, "TORCHELASTIC_USE_AGENT_STORE");
    if (torchrun && agent_store && *agent_store == "True") {
      // torchrun's agent on rank 0's host already listens on MASTER_PORT.
      REMOE_CHECK(info.master_port < 65535, "launch environment: torchrun's agent store holds "
                  "MASTER_PORT=65535 and the next port does not exist: set REMOE_BOOTSTRAP_PORT");
      info.bootstrap_port = info.master_port + 1;
    }
    if (lookup(env, "REMOE_BOOTSTRAP_PORT"))
      info.bootstrap_port =
          int(parse_int(env, "REMOE_BOOTSTRAP_PORT", 1, 65535, "a port in 1..65535"));
  }
  info.job_token = token_of(l, env, &info.token_source);
  REMOE_CHECK(info.job_token.size() <= kMaxString, "launch environment: the job token from ",
              info.token_source, " is ", info.job_token.size(), " bytes, longer than ",
              kMaxString);
  REMOE_CHECK(!info.job_token.empty() || info.world_size == 1, "launch environment: ", l.name,
              " with ", l.size, "=", info.world_size, " but no job token: set REMOE_JOB_TOKEN to "
              "one value on every rank of the job (e.g. mpirun -x REMOE_JOB_TOKEN=$RANDOM$RANDOM)");
  return info;
}

// --- TCP rendezvous ----------------------------------------------------------------------
//
// rank p > 0 → rank 0:  "REMOEBS1", u32 rank, u32 world size, str token, str host, str device
// rank 0 → rank p:      u32 status (kOk, kRefused, kFailed), str message, str blob
// (u32 little-endian; str = u32 length + bytes.)

namespace {

using Clock = std::chrono::steady_clock;
constexpr char kMagic[8] = {'R', 'E', 'M', 'O', 'E', 'B', 'S', '1'};
constexpr uint32_t kOk = 0, kRefused = 1, kFailed = 2;
// A connection gets this long to introduce itself before rank 0 drops it and moves on.
constexpr std::chrono::milliseconds kHandshakeTimeout{5000};

class Fd {
 public:
  explicit Fd(int fd = -1) : fd_(fd) {}
  ~Fd() {
    if (fd_ >= 0) ::close(fd_);
  }
  Fd(Fd&& o) noexcept : fd_(std::exchange(o.fd_, -1)) {}
  Fd& operator=(Fd&& o) noexcept {
    std::swap(fd_, o.fd_);
    return *this;
  }
  int get() const { return fd_; }
  int release() { return std::exchange(fd_, -1); }
  explicit operator bool() const { return fd_ >= 0; }

 private:
  int fd_;
};

int64_t ms_left(Clock::time_point deadline) {
  const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
  return std::max<int64_t>(0, left.count());
}

// false on timeout; POLLERR / POLLHUP count as ready (the next read or write reports them).
bool wait_fd(int fd, short events, Clock::time_point deadline) {
  for (;;) {
    pollfd p{fd, events, 0};
    const int r = ::poll(&p, 1, int(std::min<int64_t>(ms_left(deadline), 1 << 30)));
    if (r > 0) return true;
    if (r == 0) return false;
    if (errno != EINTR) REMOE_FAIL("bootstrap: poll failed: ", std::strerror(errno));
  }
}

enum class Io { ok, closed, timeout };

Io send_all(int fd, const std::string& data, Clock::time_point deadline) {
  size_t done = 0;
  while (done < data.size()) {
    if (!wait_fd(fd, POLLOUT, deadline)) return Io::timeout;
    const ssize_t n = ::send(fd, data.data() + done, data.size() - done, MSG_NOSIGNAL);
    if (n < 0 && (errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK)) continue;
    if (n <= 0) return Io::closed;
    done += size_t(n);
  }
  return Io::ok;
}

Io recv_all(int fd, void* data, size_t size, Clock::time_point deadline) {
  size_t done = 0;
  while (done < size) {
    if (!wait_fd(fd, POLLIN, deadline)) return Io::timeout;
    const ssize_t n = ::recv(fd, static_cast<char*>(data) + done, size - done, 0);
    if (n < 0 && (errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK)) continue;
    if (n <= 0) return Io::closed;
    done += size_t(n);
  }
  return Io::ok;
}

void put_u32(std::string& out, uint32_t v) {
  for (int i = 0; i < 4; ++i) out += char((v >> (8 * i)) & 0xff);
}
void put_str(std::string& out, const std::string& s) {
  put_u32(out, uint32_t(s.size()));
  out += s;
}

// Reads fields off a socket; the first failure sticks (later reads return empty values).
class Reader {
 public:
  Reader(int fd, Clock::time_point deadline) : fd_(fd), deadline_(deadline) {}
  Io status() const { return status_; }
  bool ok() const { return status_ == Io::ok && !bad_; }

  void bytes(void* out, size_t n) {
    if (ok()) status_ = recv_all(fd_, out, n, deadline_);
  }
  uint32_t u32() {
    unsigned char b[4] = {};
    bytes(b, 4);
    return ok() ? uint32_t(b[0]) | uint32_t(b[1]) << 8 | uint32_t(b[2]) << 16 | uint32_t(b[3]) << 24
                : 0;
  }
  std::string str(size_t max) {
    const uint32_t n = u32();
    if (!ok()) return "";
    if (n > max) {
      bad_ = true;  // garbage, not a remoe peer: don't allocate what it claims
      return "";
    }
    std::string s(n, '\0');
    bytes(s.data(), n);
    return ok() ? s : "";
  }

 private:
  int fd_;
  Clock::time_point deadline_;
  Io status_ = Io::ok;
  bool bad_ = false;
};

std::string reply(uint32_t status, const std::string& message, const Blob& blob) {
  std::string out;
  put_u32(out, status);
  put_str(out, message);
  put_str(out, std::string(blob.begin(), blob.end()));
  return out;
}

std::string endpoint(const std::string& addr, int port) {
  return addr.find(':') != std::string::npos ? str_cat("[", addr, "]:", port)
                                              : str_cat(addr, ":", port);
}

struct AddrList {
  addrinfo* head = nullptr;
  ~AddrList() {
    if (head) ::freeaddrinfo(head);
  }
};

// gai error text, or "" when resolved.
std::string resolve(const std::string& addr, int port, bool passive, AddrList& out) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = passive ? AI_PASSIVE : 0;
  const int rc = ::getaddrinfo(addr.c_str(), std::to_string(port).c_str(), &hints, &out.head);
  return rc == 0 ? "" : ::gai_strerror(rc);
}

// One connection attempt over every address of `addr`; an invalid Fd and *error on failure.
Fd try_connect(const std::string& addr, int port, Clock::time_point deadline, std::string* error) {
  AddrList list;
  if (std::string e = resolve(addr, port, false, list); !e.empty()) {
    *error = "cannot resolve '" + addr + "': " + e;
    return Fd();
  }
  for (addrinfo* ai = list.head; ai; ai = ai->ai_next) {
    Fd fd(::socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, ai->ai_protocol));
    if (!fd) {
      *error = std::strerror(errno);
      continue;
    }
    if (::connect(fd.get(), ai->ai_addr, ai->ai_addrlen) == 0) return fd;
    if (errno != EINPROGRESS) {
      *error = std::strerror(errno);
      continue;
    }
    if (!wait_fd(fd.get(), POLLOUT, deadline)) {
      *error = "connection timed out";
      continue;
    }
    int so_error = 0;
    socklen_t len = sizeof so_error;
    ::getsockopt(fd.get(), SOL_SOCKET, SO_ERROR, &so_error, &len);
    if (so_error == 0) return fd;
    *error = std::strerror(so_error);
  }
  return Fd();
}

}  // namespace

BootstrapServer::BootstrapServer(const std::string& addr, int port) {
  REMOE_CHECK(port >= 0 && port <= 65535, "bootstrap: port ", port, " is outside 0..65535");
  where_ = endpoint(addr, port);
  AddrList list;
  if (std::string e = resolve(addr, port, true, list); !e.empty())
    REMOE_FAIL("bootstrap: rank 0 cannot resolve MASTER_ADDR '", addr, "': ", e);
  std::string error = "no address";
  for (addrinfo* ai = list.head; ai; ai = ai->ai_next) {
    Fd fd(::socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, ai->ai_protocol));
    if (!fd) {
      error = std::strerror(errno);
      continue;
    }
    // NOTE: a restarted job reuses its port while the last run's sockets sit in TIME_WAIT.
    const int one = 1;
    ::setsockopt(fd.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (::bind(fd.get(), ai->ai_addr, ai->ai_addrlen) != 0 || ::listen(fd.get(), 128) != 0) {
      error = std::strerror(errno);
      continue;
    }
    sockaddr_storage bound{};
    socklen_t len = sizeof bound;
    ::getsockname(fd.get(), reinterpret_cast<sockaddr*>(&bound), &len);
    port_ = bound.ss_family == AF_INET6 ? ntohs(reinterpret_cast<sockaddr_in6*>(&bound)->sin6_port)
                                        : ntohs(reinterpret_cast<sockaddr_in*>(&bound)->sin_port);
    fd_ = fd.release();
    where_ = endpoint(addr, port_);
    return;
  }
  REMOE_FAIL("bootstrap: rank 0 cannot listen on ", where_, ": ", error,
             " (MASTER_ADDR must name this host, and MASTER_PORT must be free)");
}

BootstrapServer::~BootstrapServer() {
  if (fd_ >= 0) ::close(fd_);
}

std::vector<PeerInfo> BootstrapServer::serve(int world_size, const std::string& token,
                                             const PeerInfo& self, const Blob& blob,
                                             std::chrono::milliseconds timeout) {
  REMOE_CHECK(world_size >= 1, "bootstrap: world size ", world_size, " must be ≥ 1");
  REMOE_CHECK(blob.size() <= kMaxBlobBytes, "bootstrap: a blob of ", blob.size(),
              " bytes is larger than ", kMaxBlobBytes);
  const auto deadline = Clock::now() + timeout;
  const auto w = static_cast<size_t>(world_size);
  std::vector<Fd> conns(w);
  std::vector<PeerInfo> peers(w);
  std::vector<char> present(w, 0);
  peers[0] = self;
  present[0] = 1;
  int missing = world_size - 1, refused = 0;

  // Tells every connected rank why the job cannot start, then throws the same message.
  auto fail_all = [&](const std::string& message) {
    const auto soon = Clock::now() + std::chrono::seconds(1);
    for (Fd& c : conns)
      if (c) send_all(c.get(), reply(kFailed, message, {}), soon);
    REMOE_FAIL(message);
  };

  while (missing > 0) {
    if (!wait_fd(fd_, POLLIN, deadline)) {
      std::string list;
      for (int p = 1; p < world_size; ++p)
        if (!present[size_t(p)]) list += (list.empty() ? "" : ", ") + std::to_string(p);
      fail_all(str_cat("bootstrap: rank 0 waited ", timeout.count(), " ms for rank(s) ", list,
                       " of ", world_size, " to connect to ", where_,
                       refused ? str_cat(" (refused ", refused, " connection(s) with another job "
                                         "token or not speaking remoe's protocol)")
                               : std::string(),
                       "; check that every rank started with the same MASTER_ADDR and "
                       "MASTER_PORT"));
    }
    Fd conn(::accept4(fd_, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC));
    if (!conn) continue;  // the peer gave up in between (ECONNABORTED), or EINTR / EAGAIN

    Reader in(conn.get(), std::min(deadline, Clock::now() + kHandshakeTimeout));
    char magic[sizeof kMagic] = {};
    in.bytes(magic, sizeof magic);
    if (!in.ok() || std::memcmp(magic, kMagic, sizeof kMagic) != 0) {
      ++refused;  // not a remoe rank: drop it without a word
      continue;
    }
    const uint32_t rank = in.u32(), world = in.u32();
    const std::string peer_token = in.str(kMaxString);
    PeerInfo info;
    info.host = in.str(kMaxString);
    info.device = in.str(kMaxString);
    if (!in.ok()) {
      ++refused;
      continue;
    }
    if (peer_token != token) {
      send_all(conn.get(), reply(kRefused, "wrong job token (it belongs to another job)", {}),
               Clock::now() + std::chrono::seconds(1));
      ++refused;
      continue;
    }
    // The errors below stop the job: tell this process too, then everyone connected.
    auto fail_here = [&](const std::string& message) {
      send_all(conn.get(), reply(kFailed, message, {}), Clock::now() + std::chrono::seconds(1));
      fail_all(message);
    };
    if (int64_t(world) != world_size)
      fail_here(str_cat("bootstrap: rank ", rank, " on ", info.host, " says the world has ", world,
                       " ranks, rank 0 says ", world_size));
    if (rank < 1 || int64_t(rank) >= world_size)
      fail_here(str_cat("bootstrap: a process on ", info.host, " claims rank ", rank,
                       ", outside 1..", world_size - 1));
    if (present[rank])
      fail_here(str_cat("bootstrap: two processes claim rank ", rank, " (on ", peers[rank].host,
                       " and on ", info.host, ")"));
    present[rank] = 1;
    peers[rank] = info;
    conns[rank] = std::move(conn);
    --missing;
  }

  for (int a = 0; a < world_size; ++a)
    for (int b = a + 1; b < world_size; ++b)
      if (peers[size_t(a)].host == peers[size_t(b)].host &&
          peers[size_t(a)].device == peers[size_t(b)].device)
        fail_all(str_cat("bootstrap: ranks ", a, " and ", b, " both use GPU ",
                         peers[size_t(a)].device, " on host ", peers[size_t(a)].host,
                         "; each rank needs its own GPU (check LOCAL_RANK, CUDA_VISIBLE_DEVICES "
                         "and that no host runs more ranks than it has GPUs)"));

  const std::string ok = reply(kOk, "", blob);
  for (int p = 1; p < world_size; ++p)
    REMOE_CHECK(send_all(conns[size_t(p)].get(), ok, deadline) == Io::ok, "bootstrap: rank ", p,
                " on ", peers[size_t(p)].host, " closed its connection before rank 0 could send "
                "the NCCL id");
  return peers;
}

Blob bootstrap_connect(const std::string& addr, int port, int rank, int world_size,
                       const std::string& token, const PeerInfo& self,
                       std::chrono::milliseconds timeout) {
  REMOE_CHECK(rank >= 1 && rank < world_size, "bootstrap_connect: rank ", rank,
              " is not in 1..", world_size - 1);
  REMOE_CHECK(port >= 1 && port <= 65535, "bootstrap: port ", port, " is outside 1..65535");
  for (const std::string* s : {&token, &self.host, &self.device})
    REMOE_CHECK(s->size() <= kMaxString, "bootstrap: '", s->substr(0, 40), "...' is longer than ",
                kMaxString, " bytes");
  const std::string where = endpoint(addr, port);
  const auto deadline = Clock::now() + timeout;

  Fd fd;
  std::string last_error;
  auto backoff = std::chrono::milliseconds(20);
  for (;;) {
    fd = try_connect(addr, port, deadline, &last_error);
    if (fd) break;
    REMOE_CHECK(Clock::now() < deadline, "bootstrap: rank ", rank,
                " could not connect to rank 0 at ", where, " within ", timeout.count(),
                " ms (last error: ", last_error,
                "); check MASTER_ADDR and MASTER_PORT and that rank 0 is running");
    std::this_thread::sleep_for(std::min(backoff, std::chrono::milliseconds(ms_left(deadline))));
    backoff = std::min(backoff * 2, std::chrono::milliseconds(1000));
  }

  std::string hello(kMagic, sizeof kMagic);
  put_u32(hello, uint32_t(rank));
  put_u32(hello, uint32_t(world_size));
  put_str(hello, token);
  put_str(hello, self.host);
  put_str(hello, self.device);
  REMOE_CHECK(send_all(fd.get(), hello, deadline) == Io::ok, "bootstrap: rank ", rank,
              " could not introduce itself to rank 0 at ", where, " (connection lost)");

  Reader in(fd.get(), deadline);
  const uint32_t status = in.u32();
  const std::string message = in.str(kMaxString * 4);
  const std::string blob = in.str(kMaxBlobBytes);
  REMOE_CHECK(in.status() != Io::timeout, "bootstrap: rank ", rank, " reached rank 0 at ", where,
              " but had no answer within ", timeout.count(), " ms (rank 0 waits for other "
              "ranks; did they all start?)");
  REMOE_CHECK(in.ok(), "bootstrap: rank 0 at ", where, " closed the connection of rank ", rank,
              " without an answer (did rank 0 fail? see its log)");
  REMOE_CHECK(status != kRefused, "bootstrap: rank 0 at ", where, " refused rank ", rank, ": ",
              message);
  REMOE_CHECK(status == kOk, message, " [reported by rank 0 to rank ", rank, "]");
  return Blob(blob.begin(), blob.end());
}

Blob exchange_blob(const LaunchInfo& launch, const PeerInfo& self, const Blob& blob,
                   std::chrono::milliseconds timeout) {
  if (launch.world_size == 1) return blob;
  if (launch.rank == 0) {
    BootstrapServer server(launch.master_addr, launch.bootstrap_port);
    server.serve(launch.world_size, launch.job_token, self, blob, timeout);
    return blob;
  }
  return bootstrap_connect(launch.master_addr, launch.bootstrap_port, launch.rank,
                           launch.world_size, launch.job_token, self, timeout);
}

std::string hostname() {
  char name[256] = {};
  if (::gethostname(name, sizeof name - 1) != 0) return "unknown-host";
  return name;
}

}  // namespace remoe::dist
