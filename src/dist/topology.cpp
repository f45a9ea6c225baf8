#include "zlora/dist/topology.h"

#include "zlora/core/error.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <ifaddrs.h>
#include <net/if.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <map>

namespace zlora::dist {

namespace {

using json = nlohmann::json;

// The launcher variables that choose which network a job uses: shown in the log and topology.json so
// that "which interface did it take" has an answer.
constexpr const char* kNetworkEnv[] = {"OMPI_MCA_btl",
                                       "OMPI_MCA_pml",
                                       "OMPI_MCA_btl_tcp_if_include",
                                       "OMPI_MCA_oob_tcp_if_include",
                                       "NCCL_SOCKET_IFNAME",
                                       "NCCL_IB_HCA",
                                       "NCCL_NET",
                                       "UCX_NET_DEVICES"};

json place_to_json(const RankPlace& p) {
  return json{{"rank", p.rank},
              {"node", p.node},
              {"host", p.host},
              {"pid", p.pid},
              {"local_rank", p.local_rank},
              {"local_size", p.local_size},
              {"device", p.device},
              {"port", p.port},
              {"interfaces", p.interfaces}};
}

RankPlace place_from_json(const json& j) {
  RankPlace p;
  p.rank = j.at("rank").get<int>();
  p.node = j.at("node").get<std::string>();
  p.host = j.at("host").get<std::string>();
  p.pid = j.at("pid").get<long>();
  p.local_rank = j.at("local_rank").get<int>();
  p.local_size = j.at("local_size").get<int>();
  p.device = j.at("device").get<std::string>();
  p.port = j.at("port").get<int>();
  p.interfaces = j.at("interfaces").get<std::vector<std::string>>();
  return p;
}

std::string host_name() {
  char buf[256] = {};
  if (gethostname(buf, sizeof buf - 1) != 0) return "unknown-host";
  return buf;
}

// "a-b" for a run of consecutive ranks, joined by commas.
std::string rank_ranges(const std::vector<int>& ranks) {
  std::string out;
  for (size_t i = 0; i < ranks.size();) {
    size_t j = i;
    while (j + 1 < ranks.size() && ranks[j + 1] == ranks[j] + 1) ++j;
    if (!out.empty()) out += ",";
    out += j == i ? std::to_string(ranks[i]) : fmt::format("{}-{}", ranks[i], ranks[j]);
    i = j + 1;
  }
  return out;
}

// One non-blocking connect; the descriptor (or -1 when it failed at once, with `refused` set).
struct Attempt {
  size_t peer = 0;
  int fd = -1;
  bool refused = false;
  bool answered = false;
  bool connected = false;
};

Attempt start_connect(size_t peer, const std::string& address, int port) {
  Attempt a;
  a.peer = peer;
  sockaddr_in sa{};
  sa.sin_family = AF_INET;
  sa.sin_port = htons(static_cast<uint16_t>(port));
  if (inet_pton(AF_INET, address.c_str(), &sa.sin_addr) != 1) return a;
  a.fd = ::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (a.fd < 0) return a;
  if (::connect(a.fd, reinterpret_cast<sockaddr*>(&sa), sizeof sa) == 0) {
    a.answered = a.connected = true;
  } else if (errno == ECONNREFUSED) {
    a.answered = a.refused = true;
  } else if (errno != EINPROGRESS) {
    ::close(a.fd);
    a.fd = -1;
  }
  return a;
}

}  // namespace

const char* to_string(Liveness l) {
  switch (l) {
    case Liveness::kAlive:
      return "alive";
    case Liveness::kGone:
      return "gone";
    case Liveness::kUnreachable:
      return "unreachable";
  }
  return "?";
}

LivenessListener::LivenessListener() {
  fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd_ < 0) fail("cannot create the liveness socket: {}", std::strerror(errno));
  sockaddr_in sa{};
  sa.sin_family = AF_INET;
  sa.sin_addr.s_addr = htonl(INADDR_ANY);
  sa.sin_port = 0;
  socklen_t len = sizeof sa;
  if (::bind(fd_, reinterpret_cast<sockaddr*>(&sa), sizeof sa) != 0 || ::listen(fd_, 128) != 0 ||
      ::getsockname(fd_, reinterpret_cast<sockaddr*>(&sa), &len) != 0) {
    const int err = errno;
    ::close(fd_);
    fail("cannot listen on a TCP port for liveness probes: {}", std::strerror(err));
  }
  port_ = ntohs(sa.sin_port);
}

LivenessListener::~LivenessListener() {
  if (fd_ >= 0) ::close(fd_);
}

std::vector<std::string> ipv4_interfaces() {
  std::vector<std::string> out;
  ifaddrs* list = nullptr;
  if (getifaddrs(&list) != 0) return out;
  for (ifaddrs* i = list; i; i = i->ifa_next) {
    if (!i->ifa_addr || i->ifa_addr->sa_family != AF_INET || (i->ifa_flags & IFF_LOOPBACK) || !(i->ifa_flags & IFF_UP))
      continue;
    char buf[INET_ADDRSTRLEN] = {};
    inet_ntop(AF_INET, &reinterpret_cast<sockaddr_in*>(i->ifa_addr)->sin_addr, buf, sizeof buf);
    out.push_back(fmt::format("{}={}", i->ifa_name, buf));
  }
  freeifaddrs(list);
  return out;
}

std::string node_name() {
  const char* slurm = std::getenv("SLURMD_NODENAME");
  return slurm && *slurm ? std::string(slurm) : host_name();
}

std::vector<Liveness> probe(const std::vector<RankPlace>& peers, const std::string& my_host, double timeout_s) {
  std::vector<Attempt> attempts;
  for (size_t p = 0; p < peers.size(); ++p) {
    std::vector<std::string> addresses;
    if (peers[p].host == my_host) addresses.push_back("127.0.0.1");
    for (const std::string& itf : peers[p].interfaces) addresses.push_back(itf.substr(itf.find('=') + 1));
    for (const std::string& a : addresses) attempts.push_back(start_connect(p, a, peers[p].port));
  }
  using clock = std::chrono::steady_clock;
  const auto deadline = clock::now() + std::chrono::duration<double>(timeout_s);
  for (;;) {
    std::vector<pollfd> fds;
    std::vector<size_t> which;
    for (size_t i = 0; i < attempts.size(); ++i)
      if (attempts[i].fd >= 0 && !attempts[i].answered) {
        fds.push_back({attempts[i].fd, POLLOUT, 0});
        which.push_back(i);
      }
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - clock::now()).count();
    if (fds.empty() || left <= 0) break;
    if (::poll(fds.data(), fds.size(), static_cast<int>(left)) < 0 && errno != EINTR) break;
    for (size_t k = 0; k < fds.size(); ++k) {
      if (fds[k].revents == 0) continue;
      Attempt& a = attempts[which[k]];
      int err = 0;
      socklen_t len = sizeof err;
      getsockopt(a.fd, SOL_SOCKET, SO_ERROR, &err, &len);
      a.answered = true;
      a.connected = err == 0;
      a.refused = err == ECONNREFUSED;
    }
  }
  std::vector<Liveness> out(peers.size(), Liveness::kUnreachable);
  std::vector<int> tried(peers.size(), 0), refused(peers.size(), 0);
  for (const Attempt& a : attempts) {
    if (a.fd >= 0) ::close(a.fd);
    ++tried[a.peer];
    if (a.connected) out[a.peer] = Liveness::kAlive;
    if (a.refused) ++refused[a.peer];
  }
  for (size_t p = 0; p < peers.size(); ++p)
    if (out[p] != Liveness::kAlive && tried[p] > 0 && refused[p] == tried[p]) out[p] = Liveness::kGone;
  return out;
}

Topology::Topology(std::vector<RankPlace> ranks, int self, std::shared_ptr<LivenessListener> listener)
    : ranks_(std::move(ranks)), self_(self), listener_(std::move(listener)) {}

Topology Topology::gather(MPI_Comm comm, int local_rank, int local_size, const std::string& device) {
  int rank = 0, size = 1;
  MPI_Comm_rank(comm, &rank);
  MPI_Comm_size(comm, &size);
  auto listener = std::make_shared<LivenessListener>();
  RankPlace me;
  me.rank = rank;
  me.node = node_name();
  me.host = host_name();
  me.pid = static_cast<long>(::getpid());
  me.local_rank = local_rank;
  me.local_size = local_size;
  me.device = device;
  me.port = listener->port();
  me.interfaces = ipv4_interfaces();
  const std::string mine = place_to_json(me).dump();
  int len = static_cast<int>(mine.size());
  std::vector<int> lens(size), offsets(size);
  MPI_Allgather(&len, 1, MPI_INT, lens.data(), 1, MPI_INT, comm);
  int total = 0;
  for (int r = 0; r < size; ++r) {
    offsets[r] = total;
    total += lens[r];
  }
  std::string all(static_cast<size_t>(total), '\0');
  MPI_Allgatherv(mine.data(), len, MPI_CHAR, all.data(), lens.data(), offsets.data(), MPI_CHAR, comm);
  std::vector<RankPlace> ranks;
  for (int r = 0; r < size; ++r) ranks.push_back(place_from_json(json::parse(all.substr(offsets[r], lens[r]))));
  return Topology(std::move(ranks), rank, std::move(listener));
}

std::vector<std::string> Topology::nodes() const {
  std::vector<std::string> out;
  for (const RankPlace& p : ranks_)
    if (std::find(out.begin(), out.end(), p.node) == out.end()) out.push_back(p.node);
  return out;
}

std::string Topology::describe() const {
  const std::vector<std::string> names = nodes();
  std::string out = fmt::format("topology: {} node{}, {} rank{}", names.size(), names.size() == 1 ? "" : "s",
                                ranks_.size(), ranks_.size() == 1 ? "" : "s");
  for (const std::string& n : names) {
    std::vector<int> ranks;
    std::vector<std::string> devices;
    const RankPlace* first = nullptr;
    for (const RankPlace& p : ranks_)
      if (p.node == n) {
        if (!first) first = &p;
        ranks.push_back(p.rank);
        devices.push_back(fmt::format("local {} -> {}", p.local_rank, p.device));
      }
    out += fmt::format("\n  node {} (host {}): ranks {} ({}); interfaces {}", n, first->host, rank_ranges(ranks),
                       fmt::join(devices, ", "),
                       first->interfaces.empty() ? std::string("none but loopback")
                                                 : fmt::to_string(fmt::join(first->interfaces, " ")));
  }
  std::vector<std::string> env;
  for (const char* v : kNetworkEnv)
    if (const char* s = std::getenv(v)) env.push_back(fmt::format("{}={}", v, s));
  out += fmt::format("\n  network selection: {}",
                     env.empty() ? std::string("launcher defaults") : fmt::to_string(fmt::join(env, " ")));
  return out;
}

std::string Topology::to_json(const std::string& backend,
                              const std::vector<std::pair<std::string, std::string>>& collectives) const {
  json j;
  j["world_size"] = ranks_.size();
  j["num_nodes"] = num_nodes();
  j["backend"] = backend;
  json coll = json::object();
  for (const auto& [op, transport] : collectives) coll[op] = transport;
  j["collectives"] = coll;
  json nodes = json::array();
  for (const std::string& n : this->nodes()) {
    json node{{"node", n}, {"ranks", json::array()}};
    for (const RankPlace& p : ranks_)
      if (p.node == n) {
        node["host"] = p.host;
        node["ranks"].push_back(p.rank);
      }
    nodes.push_back(node);
  }
  j["nodes"] = nodes;
  json ranks = json::array();
  for (const RankPlace& p : ranks_) {
    json r = place_to_json(p);
    r.erase("port");
    ranks.push_back(r);
  }
  j["ranks"] = ranks;
  json env = json::object();
  for (const char* v : kNetworkEnv)
    if (const char* s = std::getenv(v)) env[v] = s;
  j["launcher_env"] = env;
  return j.dump(2) + "\n";
}

std::string Topology::diagnose(double timeout_s) const {
  std::vector<RankPlace> peers;
  for (const RankPlace& p : ranks_)
    if (p.rank != self_) peers.push_back(p);
  if (peers.empty()) return "this is the only rank";
  const std::vector<Liveness> state = probe(peers, ranks_[static_cast<size_t>(self_)].host, timeout_s);
  std::vector<std::string> lost;
  for (size_t i = 0; i < peers.size(); ++i) {
    const RankPlace& p = peers[i];
    if (state[i] == Liveness::kGone)
      lost.push_back(
          fmt::format("rank {} (node {}, host {}, pid {}) is gone: its process ended", p.rank, p.node, p.host, p.pid));
    else if (state[i] == Liveness::kUnreachable)
      lost.push_back(
          fmt::format("rank {} (node {}, host {}, pid {}) is unreachable: no answer from its host within {} s", p.rank,
                      p.node, p.host, p.pid, timeout_s));
  }
  if (lost.empty())
    return fmt::format("every other rank ({}) still runs: one of them is stuck or skipped this collective",
                       peers.size());
  return fmt::format("lost {}", fmt::join(lost, "; "));
}

}  // namespace zlora::dist
