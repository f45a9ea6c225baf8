// The liveness probe, the topology's log/JSON/diagnosis, and the ring pricing of traffic, in one
// process (the gather across ranks runs in test_comm_timeout and the e2e and cluster tests).
#include "zlora/dist/topology.h"
#include "zlora/dist/traffic.h"

#include <gtest/gtest.h>
#include <unistd.h>
#include <nlohmann/json.hpp>

#include <chrono>
#include <memory>

namespace {

using namespace zlora::dist;

std::string this_host() {
  char buf[256] = {};
  gethostname(buf, sizeof buf - 1);
  return buf;
}

RankPlace place(int rank, const std::string& node, const std::string& host, int port,
                std::vector<std::string> interfaces = {}) {
  RankPlace p;
  p.rank = rank;
  p.node = node;
  p.host = host;
  p.pid = 1000 + rank;
  p.local_rank = 0;
  p.device = "cpu";
  p.port = port;
  p.interfaces = std::move(interfaces);
  return p;
}

TEST(Liveness, ListeningPeerIsAliveClosedPortIsGoneNoAddressIsUnreachable) {
  auto live = std::make_unique<LivenessListener>();
  int closed_port = 0;
  {
    LivenessListener gone;
    closed_port = gone.port();
  }  // closed: connects are refused now, as after the process ended
  ASSERT_GT(live->port(), 0);
  const std::vector<RankPlace> peers = {place(1, "a", this_host(), live->port()),
                                        place(2, "b", this_host(), closed_port),
                                        // A host on no shared network (no address to try). A silent
                                        // address cannot be faked portably: firewalls here answer
                                        // TEST-NET-1 with resets; cluster.netns_kill_rank covers it.
                                        place(3, "c", "elsewhere", live->port())};
  const auto t0 = std::chrono::steady_clock::now();
  const std::vector<Liveness> got = probe(peers, this_host(), 1.0);
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  ASSERT_EQ(got.size(), 3u);
  EXPECT_EQ(got[0], Liveness::kAlive);
  EXPECT_EQ(got[1], Liveness::kGone);
  EXPECT_EQ(got[2], Liveness::kUnreachable);
  EXPECT_LT(s, 5.0);
}

TEST(Topology, DescribesNodesRanksAndDiagnosesTheLostRank) {
  auto mine = std::make_shared<LivenessListener>();
  int closed_port = 0;
  {
    LivenessListener gone;
    closed_port = gone.port();
  }
  std::vector<RankPlace> ranks = {place(0, "n1", this_host(), mine->port(), {"eth0=10.0.0.1"}),
                                  place(1, "n1", this_host(), mine->port(), {"eth0=10.0.0.1"}),
                                  place(2, "n2", this_host(), closed_port, {"eth0=10.0.0.2"})};
  ranks[1].local_rank = 1;
  Topology topo(ranks, 0, mine);
  EXPECT_EQ(topo.num_nodes(), 2);
  EXPECT_EQ(topo.nodes(), (std::vector<std::string>{"n1", "n2"}));
  const std::string d = topo.describe();
  EXPECT_NE(d.find("topology: 2 nodes, 3 ranks"), std::string::npos) << d;
  EXPECT_NE(d.find("node n1 (host " + this_host() +
                   "): ranks 0-1 (local 0 -> cpu, local 1 -> cpu); interfaces eth0=10.0.0.1"),
            std::string::npos)
      << d;
  EXPECT_NE(d.find("node n2"), std::string::npos) << d;
  const std::string why = topo.diagnose(1.0);
  EXPECT_EQ(why.find("rank 1"), std::string::npos) << why;  // alive
  EXPECT_NE(why.find("lost rank 2 (node n2, host " + this_host() + ", pid 1002) is gone: its process ended"),
            std::string::npos)
      << why;
  const nlohmann::json j = nlohmann::json::parse(topo.to_json("mpi", {{"training collectives", "mpi (host memory)"}}));
  EXPECT_EQ(j["world_size"], 3);
  EXPECT_EQ(j["num_nodes"], 2);
  EXPECT_EQ(j["backend"], "mpi");
  EXPECT_EQ(j["nodes"][0]["ranks"], nlohmann::json::array({0, 1}));
  EXPECT_EQ(j["ranks"][2]["node"], "n2");
  EXPECT_FALSE(j["ranks"][2].contains("port"));
  EXPECT_EQ(j["collectives"]["training collectives"], "mpi (host memory)");
}

TEST(Topology, AllAnsweringMeansAStuckRank) {
  auto mine = std::make_shared<LivenessListener>();
  Topology topo({place(0, "n1", this_host(), mine->port()), place(1, "n1", this_host(), mine->port())}, 1, mine);
  EXPECT_NE(topo.diagnose(1.0).find("every other rank (1) still runs"), std::string::npos);
}

TEST(Traffic, RingBytesPerKindAndWorld) {
  EXPECT_EQ(ring_bytes_sent(CollectiveKind::kAllReduce, 1000, 1), 0);
  EXPECT_DOUBLE_EQ(ring_bytes_sent(CollectiveKind::kAllReduce, 1000, 2), 1000);
  EXPECT_DOUBLE_EQ(ring_bytes_sent(CollectiveKind::kAllReduce, 900, 3), 1200);
  EXPECT_DOUBLE_EQ(ring_bytes_sent(CollectiveKind::kReduceScatter, 900, 3), 600);
  EXPECT_DOUBLE_EQ(ring_bytes_sent(CollectiveKind::kAllGather, 800, 4), 600);
  EXPECT_DOUBLE_EQ(ring_bytes_sent(CollectiveKind::kBroadcast, 800, 4), 600);
  EXPECT_EQ(ring_bytes_sent(CollectiveKind::kBarrier, 800, 4), 0);
  Traffic t;
  t.add(CollectiveKind::kAllReduce, 1000, 2);
  t.add(CollectiveKind::kAllReduce, 1000, 2);
  t.add(CollectiveKind::kAllGather, 4000, 2);
  EXPECT_DOUBLE_EQ(t.total_bytes(), 4000);
  EXPECT_EQ(t.total_calls(), 3);
  EXPECT_EQ(t.describe(), "all_reduce 2 calls 2.00 kB, all_gather 1 call 2.00 kB");
  EXPECT_EQ(format_bytes(312), "312 B");
  EXPECT_EQ(format_bytes(1.5e6), "1.50 MB");
}

}  // namespace
