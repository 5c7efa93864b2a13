//! Network: socket-address hooks for connect, bind and unconnected UDP sends, and packet hooks
//! for per-flow bytes and DNS questions. All are attached to the cgroup v2 root so that they see
//! every agent cgroup. Each returns "allow" (1) unless the caller's cgroup is contained
//! ([`contain`]): connect4/6 and sendmsg4/6 then refuse (the syscall fails with EPERM) and
//! egress drops the packet.

use agent_monitor_common::{DNS_QUERY_LEN, DnsEvent, EventHeader, FlowCounters, SockEvent, kind};
use aya_ebpf::{
    EbpfContext as _,
    bindings::{__sk_buff, bpf_sock_addr},
    helpers::{
        bpf_get_current_cgroup_id, bpf_ktime_get_boot_ns, bpf_probe_read_user,
        generated::{bpf_get_socket_cookie, bpf_skb_cgroup_id, bpf_skb_load_bytes},
    },
    macros::{cgroup_skb, cgroup_sock_addr},
    programs::{SkBuffContext, SockAddrContext},
};

use crate::{
    contain::{self, ALLOW},
    emit,
    filter::{self, Current},
    maps::{FLOWS, MONITORED, PENDING, Pending, SCRATCH},
    nr,
};

const AF_INET: u16 = 2;
const AF_INET6: u16 = 10;

#[cgroup_sock_addr(connect4)]
pub fn connect4(ctx: SockAddrContext) -> i32 {
    let verdict = contain::connect(current_cgroup());
    park::<false>(&ctx, kind::CONNECT, nr::CONNECT);
    verdict
}

#[cgroup_sock_addr(connect6)]
pub fn connect6(ctx: SockAddrContext) -> i32 {
    let verdict = contain::connect(current_cgroup());
    park::<true>(&ctx, kind::CONNECT, nr::CONNECT);
    verdict
}

#[cgroup_sock_addr(bind4)]
pub fn bind4(ctx: SockAddrContext) -> i32 {
    park::<false>(&ctx, kind::BIND, nr::BIND);
    ALLOW
}

#[cgroup_sock_addr(bind6)]
pub fn bind6(ctx: SockAddrContext) -> i32 {
    park::<true>(&ctx, kind::BIND, nr::BIND);
    ALLOW
}

#[cgroup_sock_addr(sendmsg4)]
pub fn sendmsg4(ctx: SockAddrContext) -> i32 {
    let verdict = contain::send(current_cgroup());
    send_now::<false>(&ctx);
    verdict
}

#[cgroup_sock_addr(sendmsg6)]
pub fn sendmsg6(ctx: SockAddrContext) -> i32 {
    let verdict = contain::send(current_cgroup());
    send_now::<true>(&ctx);
    verdict
}

#[inline(always)]
fn current_cgroup() -> u64 {
    // SAFETY: helper without arguments.
    unsafe { bpf_get_current_cgroup_id() }
}

/// Connect and bind: the event waits in `PENDING` for the syscall's result.
#[inline(always)]
fn park<const V6: bool>(ctx: &SockAddrContext, kind: u16, nr: i32) {
    let Some(cur) = filter::current_agent() else {
        return;
    };
    let Some(pending) = SCRATCH.get_ptr_mut(0) else {
        return;
    };
    // SAFETY: per-CPU scratch, used only within this program run.
    let pending = unsafe { &mut *pending };
    pending.nr = nr;
    pending.user_ptr = 0;
    pending.user_ptr2 = 0;
    let ev = sock_event(pending, &cur, kind);
    fill_from_sock_addr::<V6>(ev, ctx);
    let _ = PENDING.insert(&cur.pid_tgid, pending, 0);
}

/// Unconnected UDP send: there is no later result to wait for.
#[inline(always)]
fn send_now<const V6: bool>(ctx: &SockAddrContext) {
    let Some(cur) = filter::current_agent() else {
        return;
    };
    let mut ev = SockEvent {
        header: emit::header(kind::UDP_SEND, &cur),
        ..Default::default()
    };
    fill_from_sock_addr::<V6>(&mut ev, ctx);
    emit::output(&ev, cur.agent.slot, kind::UDP_SEND);
}

/// Starts a socket event in `pending`; the address is filled by the caller.
#[inline(always)]
pub fn sock_event<'a>(pending: &'a mut Pending, cur: &Current, kind: u16) -> &'a mut SockEvent {
    // SAFETY: `data` is large and aligned enough for every event.
    let ev = unsafe { &mut *(pending.data.as_mut_ptr() as *mut SockEvent) };
    ev.header = emit::header(kind, cur);
    ev.ret = 0;
    ev.cookie = 0;
    ev.family = 0;
    ev.port = 0;
    ev.sock_type = 0;
    ev.addr = [0; 16];
    ev
}

/// `V6` selects the address fields: the verifier lets an IPv4 hook read only `user_ip4` and an
/// IPv6 hook only `user_ip6`.
#[inline(always)]
fn fill_from_sock_addr<const V6: bool>(ev: &mut SockEvent, ctx: &SockAddrContext) {
    // SAFETY: the context pointer is valid for the program's run.
    let sa: &bpf_sock_addr = unsafe { &*ctx.sock_addr };
    // SAFETY: helper valid for socket-address programs.
    ev.cookie = unsafe { bpf_get_socket_cookie(ctx.as_ptr()) };
    ev.family = sa.user_family as u16;
    ev.sock_type = sa.type_ as u16;
    // The port is in network order in the low 16 bits.
    ev.port = u16::from_be(sa.user_port as u16);
    if !V6 {
        ev.addr[..4].copy_from_slice(&sa.user_ip4.to_ne_bytes());
    } else {
        let ip6 = [
            sa.user_ip6[0],
            sa.user_ip6[1],
            sa.user_ip6[2],
            sa.user_ip6[3],
        ];
        for (i, word) in ip6.iter().enumerate() {
            ev.addr[i * 4..i * 4 + 4].copy_from_slice(&word.to_ne_bytes());
        }
    }
}

/// Reads the peer address accept() wrote to user memory (`struct sockaddr_in`/`_in6`).
#[inline(always)]
pub fn read_user_sockaddr(ev: &mut SockEvent, ptr: u64) {
    let p = ptr as *const u8;
    // SAFETY: user memory is read with the faulting-safe helper.
    let Ok(family) = (unsafe { bpf_probe_read_user(p as *const u16) }) else {
        return;
    };
    // SAFETY: as above.
    let Ok(port) = (unsafe { bpf_probe_read_user(p.wrapping_add(2) as *const u16) }) else {
        return;
    };
    ev.family = family;
    ev.port = u16::from_be(port);
    if family == AF_INET {
        // SAFETY: as above.
        if let Ok(a) = unsafe { bpf_probe_read_user(p.wrapping_add(4) as *const [u8; 4]) } {
            ev.addr[..4].copy_from_slice(&a);
        }
    } else if family == AF_INET6 {
        // SAFETY: as above.
        if let Ok(a) = unsafe { bpf_probe_read_user(p.wrapping_add(8) as *const [u8; 16]) } {
            ev.addr = a;
        }
    }
}

#[cgroup_skb(egress)]
pub fn skb_egress(ctx: SkBuffContext) -> i32 {
    let skb = ctx.as_ptr() as *mut __sk_buff;
    // SAFETY: helpers valid for cgroup_skb programs.
    let cgroup_id = unsafe { bpf_skb_cgroup_id(skb) };
    let len = u64::from(ctx.len());
    let verdict = contain::egress(cgroup_id, len);
    // SAFETY: the value is copied out at once.
    let Some(agent) = (unsafe { MONITORED.get(&cgroup_id) }).copied() else {
        return verdict;
    };
    // SAFETY: as above.
    let cookie = unsafe { bpf_get_socket_cookie(skb.cast()) };
    match FLOWS.get_ptr_mut(&cookie) {
        // SAFETY: counters are approximate under concurrent updates from two CPUs; the window
        // features only need byte magnitudes.
        Some(flow) => unsafe {
            (*flow).bytes_out += len;
            (*flow).packets_out += 1;
        },
        None => {
            let flow = FlowCounters {
                cgroup_id,
                bytes_out: len,
                packets_out: 1,
                ..Default::default()
            };
            let _ = FLOWS.insert(&cookie, &flow, 0);
        }
    }
    dns_question(&ctx, cookie, cgroup_id, agent.slot);
    verdict
}

#[cgroup_skb(ingress)]
pub fn skb_ingress(ctx: SkBuffContext) -> i32 {
    // Only flows an agent has sent on are counted: those have an entry already.
    // SAFETY: helper valid for cgroup_skb programs.
    let cookie = unsafe { bpf_get_socket_cookie(ctx.as_ptr()) };
    if let Some(flow) = FLOWS.get_ptr_mut(&cookie) {
        // SAFETY: see `skb_egress`.
        unsafe {
            (*flow).bytes_in += ctx.len() as u64;
            (*flow).packets_in += 1;
        }
    }
    ALLOW
}

/// Sends the question of a UDP packet to port 53 (IPv4 or IPv6 without extension headers).
#[inline(always)]
fn dns_question(ctx: &SkBuffContext, cookie: u64, cgroup_id: u64, slot: u32) {
    let Ok(first) = ctx.load::<u8>(0) else {
        return;
    };
    let (family, l4, proto_off, dst_off, addr_len) = match first >> 4 {
        4 => (AF_INET, ((first & 0x0f) as usize) * 4, 9, 16, 4),
        6 => (AF_INET6, 40, 6, 24, 16),
        _ => return,
    };
    if ctx.load::<u8>(proto_off).ok() != Some(17) {
        return;
    }
    let Ok(dport) = ctx.load::<u16>(l4 + 2) else {
        return;
    };
    if u16::from_be(dport) != 53 {
        return;
    }
    let Some(scratch) = SCRATCH.get_ptr_mut(0) else {
        return;
    };
    // SAFETY: per-CPU scratch, large and aligned enough for a DnsEvent.
    let ev = unsafe { &mut *((*scratch).data.as_mut_ptr() as *mut DnsEvent) };
    ev.header = EventHeader {
        kind: kind::DNS_QUERY,
        flags: 0,
        slot,
        // SAFETY: helper without arguments.
        ts_ns: unsafe { bpf_ktime_get_boot_ns() },
        cgroup_id,
        tgid: 0,
        tid: 0,
    };
    ev.cookie = cookie;
    ev.family = family;
    ev.port = 53;
    ev.addr = [0; 16];
    if addr_len == 4 {
        if let Ok(a) = ctx.load::<[u8; 4]>(dst_off) {
            ev.addr[..4].copy_from_slice(&a);
        }
    } else if let Ok(a) = ctx.load::<[u8; 16]>(dst_off) {
        ev.addr = a;
    }
    // UDP header (8) then the DNS header (12) precede the question.
    let start = l4 + 20;
    let avail = (ctx.len() as usize).saturating_sub(start);
    if avail == 0 {
        return;
    }
    // The verifier needs a length it can prove is in 1..=DNS_QUERY_LEN.
    let n = ((avail.min(DNS_QUERY_LEN) - 1) & (DNS_QUERY_LEN - 1)) + 1;
    // SAFETY: `n <= DNS_QUERY_LEN`, the size of `ev.query`.
    let r = unsafe {
        bpf_skb_load_bytes(
            ctx.as_ptr() as *const _,
            start as u32,
            ev.query.as_mut_ptr().cast(),
            n as u32,
        )
    };
    if r != 0 {
        return;
    }
    ev.query_len = n as u16;
    emit::output(ev, slot, kind::DNS_QUERY);
}
