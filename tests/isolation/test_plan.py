"""The isolation plan (pure): names, addresses, users, hosts files and iptables rules."""

from __future__ import annotations

import ipaddress

from hypothesis import given
from hypothesis import strategies as st

from meshward.isolation.plan import INBOUND_PORT, OUTBOUND_PORT, hosts_file, iptables_rules, make_plan


def test_plan_names_carry_the_tag_and_fit_linux_limits() -> None:
    plan = make_plan("/tmp/state-a", [("ml/fraud", 40000), ("web/webapp", 40001)])
    assert plan.bridge == f"mwbr{plan.tag}" and len(plan.bridge) <= 15
    for i, ns in enumerate(plan.namespaces):
        assert ns.netns == f"mw-{plan.tag}-{i}"
        assert len(ns.host_veth) <= 15 and len(ns.ns_veth) <= 15
        assert ipaddress.ip_address(ns.address) in ipaddress.ip_network(plan.subnet)
        assert ns.uid == plan.namespaces[0].uid + i and 20000 <= ns.uid < 120000
    assert plan.gateway.endswith(".1") and ipaddress.ip_network(plan.subnet).is_private
    assert plan.of("web/webapp") is plan.namespaces[1] and plan.of("x/y") is None


def test_two_state_directories_get_different_names_and_a_taken_subnet_is_skipped() -> None:
    a = make_plan("/tmp/state-a", [("a/b", 1)])
    b = make_plan("/tmp/state-b", [("a/b", 1)])
    assert a.tag != b.tag and a.bridge != b.bridge
    moved = make_plan("/tmp/state-a", [("a/b", 1)], taken_subnets=[a.subnet.replace("0/24", "1/24")])
    assert moved.subnet != a.subnet


@given(st.text(min_size=1, max_size=40), st.integers(min_value=0, max_value=30))
def test_any_state_directory_gives_a_valid_plan(state: str, count: int) -> None:
    plan = make_plan(state, [(f"ns/w{i}", 30000 + i) for i in range(count)])
    addresses = [n.address for n in plan.namespaces]
    assert len(set(addresses)) == count and plan.gateway not in addresses
    assert all(ipaddress.ip_address(a) in ipaddress.ip_network(plan.subnet) for a in addresses)


def test_rules_redirect_app_traffic_and_spare_the_sidecar() -> None:
    plan = make_plan(
        "/s", [("ml/fraud", 41000)], exclude_outbound_ports=[5432], exclude_outbound_cidrs=["192.0.2.0/24"]
    )
    rules = [" ".join(r) for r in iptables_rules(plan, plan.namespaces[0])]
    assert "-t nat -A MESHWARD_OUTPUT -m owner --uid-owner 0 -j RETURN" in rules
    assert "-t nat -A MESHWARD_OUTPUT -d 127.0.0.0/8 -j RETURN" in rules
    assert "-t nat -A MESHWARD_OUTPUT -p tcp --dport 5432 -j RETURN" in rules
    assert "-t nat -A MESHWARD_OUTPUT -d 192.0.2.0/24 -j RETURN" in rules
    redirect = f"-t nat -A MESHWARD_OUTPUT -p tcp -j REDIRECT --to-ports {OUTBOUND_PORT}"
    assert rules.index(redirect) == len(rules) - 2  # after every exclusion
    assert (
        rules[-1] == f"-t nat -A MESHWARD_INBOUND -p tcp --dport 41000 -j REDIRECT --to-ports {INBOUND_PORT}"
    )


def test_hosts_file_names_every_service() -> None:
    text = hosts_file([("fraud-model", "ml", "10.1.2.10"), ("webapp", "web", "10.1.2.11")])
    assert "10.1.2.10\tfraud-model.ml\n" in text and "10.1.2.11\twebapp.web.svc.cluster.local\n" in text
    assert text.startswith("127.0.0.1\tlocalhost\n")
