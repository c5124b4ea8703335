//! The group coordinator: Kafka's classic consumer-group protocol (JoinGroup, SyncGroup,
//! Heartbeat, LeaveGroup, ListGroups, DescribeGroups), so clients that `subscribe` get
//! partitions assigned, rebalanced when members join, leave or go silent, and resume from the
//! group's committed offsets.
//!
//! As in Kafka, the broker only relays: the group leader (a client) runs the assignor (range,
//! round-robin, sticky …) on the member metadata the broker hands it in the JoinGroup answer,
//! and sends the assignments back in SyncGroup. Membership lives in memory (a restart makes
//! every member rejoin, as a coordinator failover does in Kafka); committed offsets live in
//! the groups store (`crate::groups`), shared with HTTP and CLI consumers.
//!
//! Kafka's group states: Empty → PreparingRebalance (members (re)join; the phase ends when
//! every known member has rejoined, or at the rebalance deadline, dropping those that did
//! not) → CompletingRebalance (generation + 1; waiting for the leader's assignments) → Stable.
//! A member that sends no heartbeat for its session timeout is removed and the group
//! rebalances. A group starting from Empty waits [`INITIAL_REBALANCE_DELAY`] after each new
//! member (Kafka's `group.initial.rebalance.delay.ms`), so members starting together land in
//! one generation.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::ResponseError;
use tokio::sync::oneshot;
use tokio::time::Instant;

/// How long a group starting from Empty waits for more members after each join (Kafka's
/// default is 3 s; shorter here, as consumers of one log usually start together).
pub const INITIAL_REBALANCE_DELAY: Duration = Duration::from_millis(1000);
/// Kafka's `group.min.session.timeout.ms` and `group.max.session.timeout.ms` defaults.
pub const SESSION_TIMEOUT_MS: std::ops::RangeInclusive<i32> = 6_000..=1_800_000;
/// Members of one group (Kafka's `group.max.size` is unbounded by default).
pub const MEMBERS_MAX: usize = 1_000;
/// Members and handed-out member ids one principal (a token; "anonymous" without tokens) may
/// hold across all groups: one tenant cannot fill the coordinator for the others.
pub const PRINCIPAL_MEMBERS_MAX: usize = 10_000;
/// Bytes of assignor metadata one member may send, and all members of a group together: the
/// broker holds them and hands them all to the leader.
pub const MEMBER_METADATA_MAX: usize = 4 << 20;
pub const GROUP_METADATA_MAX: usize = 64 << 20;
/// A member id handed out with MEMBER_ID_REQUIRED is forgotten if not used this soon (clients
/// rejoin with it at once).
pub const PENDING_TTL: Duration = Duration::from_secs(30);
/// Characters of a client id kept (in member ids and for DescribeGroups).
const CLIENT_ID_CHARS: usize = 64;
/// How often expired sessions and rebalance deadlines are looked at.
pub const TICK: Duration = Duration::from_millis(100);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Empty,
    PreparingRebalance,
    CompletingRebalance,
    Stable,
}

impl State {
    /// The name Kafka's ListGroups and DescribeGroups use.
    pub fn name(self) -> &'static str {
        match self {
            State::Empty => "Empty",
            State::PreparingRebalance => "PreparingRebalance",
            State::CompletingRebalance => "CompletingRebalance",
            State::Stable => "Stable",
        }
    }
}

/// What a JoinGroup asks.
pub struct Join {
    pub group: String,
    /// The authenticated principal, for the per-principal limit.
    pub principal: String,
    /// Empty on a member's first join.
    pub member_id: String,
    pub instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub session_timeout_ms: i32,
    pub rebalance_timeout_ms: i32,
    pub protocol_type: String,
    /// Assignor names with their member metadata, in the member's order of preference.
    pub protocols: Vec<(String, Bytes)>,
    /// JoinGroup v4 and later: a first join gets MEMBER_ID_REQUIRED and its id, then joins again.
    pub require_known_member_id: bool,
}

/// A JoinGroup answer. `members` is filled for the leader only.
#[derive(Debug, Clone, Default)]
pub struct Joined {
    pub error: Option<ResponseError>,
    pub generation: i32,
    pub protocol_type: String,
    pub protocol: String,
    pub leader: String,
    pub member_id: String,
    pub members: Vec<(String, Option<String>, Bytes)>,
}

impl Joined {
    fn refused(error: ResponseError, member_id: &str) -> Joined {
        Joined { error: Some(error), generation: -1, member_id: member_id.to_string(), ..Joined::default() }
    }
}

/// A SyncGroup answer: the member's assignment, or why not.
pub type Synced = Result<(String, String, Bytes), ResponseError>;

/// One member of a group, as DescribeGroups shows it.
pub struct MemberInfo {
    pub member_id: String,
    pub instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub metadata: Bytes,
    pub assignment: Bytes,
}

/// A group, as ListGroups and DescribeGroups show it.
pub struct GroupInfo {
    pub group: String,
    pub state: State,
    pub protocol_type: String,
    pub protocol: String,
    pub members: Vec<MemberInfo>,
}

struct Member {
    principal: String,
    instance_id: Option<String>,
    client_id: String,
    client_host: String,
    session_timeout: Duration,
    rebalance_timeout: Duration,
    protocols: Vec<(String, Bytes)>,
    assignment: Bytes,
    last_seen: Instant,
    /// Set while the member's JoinGroup waits for the join phase to end.
    joining: Option<oneshot::Sender<Joined>>,
    /// Set while a follower's SyncGroup waits for the leader's assignments.
    syncing: Option<oneshot::Sender<Synced>>,
}

struct Group {
    state: State,
    generation: i32,
    protocol_type: String,
    protocol: String,
    leader: String,
    members: BTreeMap<String, Member>,
    /// Member ids handed out with MEMBER_ID_REQUIRED and not joined yet: when, and to whom.
    pending: HashMap<String, (Instant, String)>,
    /// When the current join phase started, and when it ends at the latest.
    started: Instant,
    deadline: Instant,
    /// When a group waiting for its leader's SyncGroup gives up on it.
    sync_deadline: Instant,
    /// Whether the join phase started from Empty (then it waits for its deadline).
    initial: bool,
}

impl Group {
    fn new(now: Instant) -> Group {
        Group {
            state: State::Empty,
            generation: 0,
            protocol_type: String::new(),
            protocol: String::new(),
            leader: String::new(),
            members: BTreeMap::new(),
            pending: HashMap::new(),
            started: now,
            deadline: now,
            sync_deadline: now,
            initial: false,
        }
    }

    /// Starts (or restarts) a join phase: waiting syncs are told to rejoin.
    fn prepare_rebalance(&mut self, now: Instant) {
        if self.state != State::PreparingRebalance {
            self.initial = self.state == State::Empty;
            let longest = self.longest_rebalance();
            self.started = now;
            self.deadline = if self.initial { now + INITIAL_REBALANCE_DELAY.min(longest) } else { now + longest };
            self.state = State::PreparingRebalance;
        }
        for member in self.members.values_mut() {
            if let Some(syncing) = member.syncing.take() {
                let _ = syncing.send(Err(ResponseError::RebalanceInProgress));
            }
        }
    }

    fn longest_rebalance(&self) -> Duration {
        self.members.values().map(|m| m.rebalance_timeout).max().unwrap_or_default()
    }

    /// Ends the join phase if every member has rejoined (and the initial delay is over), or
    /// its deadline has passed: members that did not rejoin are dropped, the generation moves
    /// on, and every waiting JoinGroup is answered.
    fn try_complete_join(&mut self, now: Instant) {
        if self.state != State::PreparingRebalance {
            return;
        }
        let all_joined = self.members.values().all(|m| m.joining.is_some());
        if now < self.deadline && (self.initial || !all_joined) {
            return;
        }
        self.members.retain(|_, m| m.joining.is_some());
        self.generation += 1;
        if self.members.is_empty() {
            self.state = State::Empty;
            return;
        }
        if !self.members.contains_key(&self.leader) {
            self.leader = self.members.keys().next().expect("non-empty").clone();
        }
        let leader = &self.members[&self.leader];
        self.protocol = leader
            .protocols
            .iter()
            .map(|(name, _)| name)
            .find(|name| self.members.values().all(|m| m.protocols.iter().any(|(n, _)| n == *name)))
            .cloned()
            .unwrap_or_default(); // join refuses members without a protocol in common
        let everyone: Vec<(String, Option<String>, Bytes)> = self
            .members
            .iter()
            .map(|(id, m)| (id.clone(), m.instance_id.clone(), metadata(m, &self.protocol)))
            .collect();
        self.state = State::CompletingRebalance;
        self.sync_deadline = now + self.longest_rebalance();
        for (id, member) in &mut self.members {
            member.last_seen = now;
            member.assignment = Bytes::new();
            let answer = Joined {
                error: None,
                generation: self.generation,
                protocol_type: self.protocol_type.clone(),
                protocol: self.protocol.clone(),
                leader: self.leader.clone(),
                member_id: id.clone(),
                members: if *id == self.leader { everyone.clone() } else { Vec::new() },
            };
            if let Some(joining) = member.joining.take() {
                let _ = joining.send(answer);
            }
        }
    }

    /// Removes members whose session expired, except those waiting in JoinGroup or SyncGroup
    /// (they cannot heartbeat meanwhile); when the leader has not sent its SyncGroup within the
    /// rebalance timeout, every member not waiting in SyncGroup goes. A group that lost
    /// members rebalances.
    fn expire(&mut self, now: Instant) {
        self.pending.retain(|_, (since, _)| now.duration_since(*since) < PENDING_TTL);
        let sync_overdue = self.state == State::CompletingRebalance && now >= self.sync_deadline;
        let before = self.members.len();
        self.members.retain(|_, m| {
            let waiting = m.joining.is_some() || m.syncing.is_some();
            let silent = now.duration_since(m.last_seen) > m.session_timeout;
            waiting || !(silent || sync_overdue)
        });
        if self.members.len() < before {
            if self.members.is_empty() {
                self.state = State::Empty;
            } else {
                self.prepare_rebalance(now);
                self.try_complete_join(now);
            }
        }
    }

    fn check_member(&self, member_id: &str, generation: i32) -> Result<(), ResponseError> {
        if !self.members.contains_key(member_id) {
            Err(ResponseError::UnknownMemberId)
        } else if generation != self.generation {
            Err(ResponseError::IllegalGeneration)
        } else {
            Ok(())
        }
    }
}

fn metadata(member: &Member, protocol: &str) -> Bytes {
    member.protocols.iter().find(|(name, _)| name == protocol).map(|(_, m)| m.clone()).unwrap_or_default()
}

/// Every group's membership, behind one lock (held for map updates only, never across I/O).
pub struct Coordinator {
    groups: Mutex<HashMap<String, Group>>,
    /// Members and handed-out ids per principal: counted up as they are added, recounted from
    /// the groups at every tick (so removals show within a tick). Locked inside `groups`.
    held: Mutex<HashMap<String, usize>>,
    /// Member ids are `<client id>-<nonce>-<n>`: the per-process random nonce keeps an id a
    /// client kept from before a restart from naming a new member.
    nonce: u64,
    next_member: std::sync::atomic::AtomicU64,
}

impl Default for Coordinator {
    fn default() -> Coordinator {
        use std::hash::{BuildHasher, Hasher};
        let nonce = std::collections::hash_map::RandomState::new().build_hasher().finish();
        Coordinator {
            groups: Mutex::default(),
            held: Mutex::default(),
            nonce,
            next_member: std::sync::atomic::AtomicU64::new(0),
        }
    }
}

impl Coordinator {
    fn new_member_id(&self, client_id: &str) -> String {
        let n = self.next_member.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        format!("{}-{:016x}-{n}", client_id.chars().take(CLIENT_ID_CHARS).collect::<String>(), self.nonce)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Group>> {
        self.groups.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// JoinGroup: resolves when the join phase the member takes part in ends.
    pub async fn join(&self, join: Join) -> Joined {
        let waiting = match self.enter(join) {
            Ok(waiting) => waiting,
            Err(answer) => return *answer,
        };
        // Dropped only when the coordinator shuts down or the member was removed meanwhile.
        waiting.await.unwrap_or_else(|_| Joined::refused(ResponseError::CoordinatorNotAvailable, ""))
    }

    /// Adds or updates the member; its answer comes through the receiver, or at once (`Err`).
    fn enter(&self, join: Join) -> Result<oneshot::Receiver<Joined>, Box<Joined>> {
        let now = Instant::now();
        let refuse = |error| Err(Box::new(Joined::refused(error, &join.member_id)));
        if !SESSION_TIMEOUT_MS.contains(&join.session_timeout_ms) {
            return refuse(ResponseError::InvalidSessionTimeout);
        }
        if join.protocols.is_empty() || join.protocol_type.is_empty() {
            return refuse(ResponseError::InconsistentGroupProtocol);
        }
        let metadata_bytes: usize = join.protocols.iter().map(|(_, m)| m.len()).sum();
        if metadata_bytes > MEMBER_METADATA_MAX {
            tracing::warn!(group = ?join.group, bytes = metadata_bytes, "JoinGroup refused: member metadata over {MEMBER_METADATA_MAX} bytes");
            return refuse(ResponseError::GroupMaxSizeReached);
        }
        let mut groups = self.lock();
        let mut held = self.held.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let known = groups
            .get(&join.group)
            .is_some_and(|g| g.members.contains_key(&join.member_id) || g.pending.contains_key(&join.member_id));
        if !known {
            let count = held.entry(join.principal.clone()).or_default();
            if *count >= PRINCIPAL_MEMBERS_MAX {
                tracing::warn!(principal = %join.principal, "JoinGroup refused: {PRINCIPAL_MEMBERS_MAX} group members and member ids held");
                return refuse(ResponseError::GroupMaxSizeReached);
            }
            *count += 1;
        }
        let group = groups.entry(join.group.clone()).or_insert_with(|| Group::new(now));
        // Some protocol every other member also supports (the leader picks among them).
        let others: Vec<&Member> =
            group.members.iter().filter(|(id, _)| **id != join.member_id).map(|(_, m)| m).collect();
        let common =
            join.protocols.iter().any(|(name, _)| others.iter().all(|m| m.protocols.iter().any(|(n, _)| n == name)));
        if !others.is_empty() && (group.protocol_type != join.protocol_type || !common) {
            return refuse(ResponseError::InconsistentGroupProtocol);
        }
        let group_metadata: usize = others.iter().flat_map(|m| &m.protocols).map(|(_, m)| m.len()).sum();
        if group_metadata + metadata_bytes > GROUP_METADATA_MAX {
            return refuse(ResponseError::GroupMaxSizeReached);
        }
        let mut member_id = join.member_id.clone();
        if member_id.is_empty() {
            if group.members.len() + group.pending.len() >= MEMBERS_MAX {
                return refuse(ResponseError::GroupMaxSizeReached);
            }
            member_id = self.new_member_id(&join.client_id);
            if join.require_known_member_id {
                group.pending.insert(member_id.clone(), (now, join.principal.clone()));
                return Err(Box::new(Joined::refused(ResponseError::MemberIdRequired, &member_id)));
            }
        } else if !group.members.contains_key(&member_id) && group.pending.remove(&member_id).is_none() {
            return refuse(ResponseError::UnknownMemberId);
        }
        let (tx, rx) = oneshot::channel();
        let rebalance_timeout = Duration::from_millis(join.rebalance_timeout_ms.max(join.session_timeout_ms) as u64);
        let new = !group.members.contains_key(&member_id);
        let member = group.members.entry(member_id).or_insert_with(|| Member {
            principal: join.principal.clone(),
            instance_id: None,
            client_id: String::new(),
            client_host: String::new(),
            session_timeout: Duration::ZERO,
            rebalance_timeout,
            protocols: Vec::new(),
            assignment: Bytes::new(),
            last_seen: now,
            joining: None,
            syncing: None,
        });
        member.instance_id = join.instance_id;
        member.client_id = join.client_id.chars().take(CLIENT_ID_CHARS * 4).collect();
        member.client_host = join.client_host;
        member.session_timeout = Duration::from_millis(join.session_timeout_ms as u64);
        member.rebalance_timeout = rebalance_timeout;
        member.protocols = join.protocols;
        member.last_seen = now;
        if let Some(earlier) = member.joining.replace(tx) {
            let _ = earlier.send(Joined::refused(ResponseError::RebalanceInProgress, ""));
        }
        group.protocol_type = join.protocol_type;
        group.prepare_rebalance(now);
        if group.initial && new {
            // Each new member of a starting group gives others a moment more to arrive, up to
            // the rebalance timeout from the phase's start (as Kafka caps it).
            let cap = group.started + group.longest_rebalance();
            group.deadline = (now + INITIAL_REBALANCE_DELAY).min(cap).max(group.deadline);
        }
        group.try_complete_join(now);
        Ok(rx)
    }

    /// SyncGroup: the leader's call stores every member's assignment and answers the
    /// followers waiting for it; a follower's call waits for the leader's.
    pub async fn sync(
        &self,
        group: &str,
        generation: i32,
        member_id: &str,
        assignments: Vec<(String, Bytes)>,
    ) -> Synced {
        let waiting = {
            let now = Instant::now();
            let mut groups = self.lock();
            let group = groups.get_mut(group).ok_or(ResponseError::UnknownMemberId)?;
            group.check_member(member_id, generation)?;
            let answer = |g: &Group, assignment: Bytes| (g.protocol_type.clone(), g.protocol.clone(), assignment);
            match group.state {
                State::Empty | State::PreparingRebalance => return Err(ResponseError::RebalanceInProgress),
                State::Stable => return Ok(answer(group, group.members[member_id].assignment.clone())),
                State::CompletingRebalance if member_id == group.leader => {
                    let mut assignments: HashMap<String, Bytes> = assignments.into_iter().collect();
                    group.state = State::Stable;
                    let (protocol_type, protocol) = (group.protocol_type.clone(), group.protocol.clone());
                    for (id, member) in &mut group.members {
                        member.assignment = assignments.remove(id).unwrap_or_default();
                        member.last_seen = now;
                        if let Some(syncing) = member.syncing.take() {
                            let _ =
                                syncing.send(Ok((protocol_type.clone(), protocol.clone(), member.assignment.clone())));
                        }
                    }
                    return Ok(answer(group, group.members[member_id].assignment.clone()));
                }
                State::CompletingRebalance => {
                    let member = group.members.get_mut(member_id).expect("checked");
                    member.last_seen = now;
                    let (tx, rx) = oneshot::channel();
                    if let Some(earlier) = member.syncing.replace(tx) {
                        let _ = earlier.send(Err(ResponseError::RebalanceInProgress));
                    }
                    rx
                }
            }
        };
        waiting.await.unwrap_or(Err(ResponseError::CoordinatorNotAvailable))
    }

    pub fn heartbeat(&self, group: &str, generation: i32, member_id: &str) -> Result<(), ResponseError> {
        let mut groups = self.lock();
        let group = groups.get_mut(group).ok_or(ResponseError::UnknownMemberId)?;
        group.check_member(member_id, generation)?;
        group.members.get_mut(member_id).expect("checked").last_seen = Instant::now();
        match group.state {
            State::PreparingRebalance => Err(ResponseError::RebalanceInProgress),
            _ => Ok(()),
        }
    }

    /// LeaveGroup: an error code per member id.
    pub fn leave(&self, group: &str, member_ids: &[String]) -> Vec<Result<(), ResponseError>> {
        let now = Instant::now();
        let mut groups = self.lock();
        let Some(group) = groups.get_mut(group) else {
            return member_ids.iter().map(|_| Err(ResponseError::UnknownMemberId)).collect();
        };
        let results: Vec<_> = member_ids
            .iter()
            .map(|id| group.members.remove(id).map(|_| ()).ok_or(ResponseError::UnknownMemberId))
            .collect();
        if results.iter().any(Result::is_ok) {
            if group.members.is_empty() {
                group.state = State::Empty;
            } else {
                group.prepare_rebalance(now);
                group.try_complete_join(now);
            }
        }
        results
    }

    /// Whether an OffsetCommit from this member and generation may commit, by Kafka's rules:
    /// outside a generation (-1, manual assignment) only while the group has no members;
    /// otherwise a member of the current generation, also while the group prepares a
    /// rebalance (members commit what they processed before rejoining), but not while it waits
    /// for the leader's assignments.
    pub fn check_commit(&self, group: &str, generation: i32, member_id: &str) -> Result<(), ResponseError> {
        let groups = self.lock();
        let Some(group) = groups.get(group) else {
            return if generation < 0 { Ok(()) } else { Err(ResponseError::IllegalGeneration) };
        };
        if generation < 0 && group.members.is_empty() {
            return Ok(());
        }
        if group.state == State::CompletingRebalance {
            return Err(ResponseError::RebalanceInProgress);
        }
        group.check_member(member_id, generation)
    }

    /// One group's state, or `None` when the coordinator does not know it.
    pub fn describe(&self, group: &str) -> Option<GroupInfo> {
        let groups = self.lock();
        let g = groups.get(group)?;
        let members = g
            .members
            .iter()
            .map(|(id, m)| MemberInfo {
                member_id: id.clone(),
                instance_id: m.instance_id.clone(),
                client_id: m.client_id.clone(),
                client_host: m.client_host.clone(),
                metadata: metadata(m, &g.protocol),
                assignment: m.assignment.clone(),
            })
            .collect();
        Some(GroupInfo {
            group: group.to_string(),
            state: g.state,
            protocol_type: g.protocol_type.clone(),
            protocol: g.protocol.clone(),
            members,
        })
    }

    /// Forgets `group` for DeleteGroups unless it has members or joiners (NON_EMPTY_GROUP, as
    /// Kafka): whether the coordinator knew it. No I/O under the lock: the caller deletes the
    /// committed offsets afterwards (a member that joins in between starts without them).
    pub fn forget_if_empty(&self, group: &str) -> Result<bool, ResponseError> {
        let mut groups = self.lock();
        if groups.get(group).is_some_and(|g| !g.members.is_empty() || !g.pending.is_empty()) {
            return Err(ResponseError::NonEmptyGroup);
        }
        Ok(groups.remove(group).is_some())
    }

    /// Every group the coordinator knows: (name, state, protocol type).
    pub fn list(&self) -> Vec<(String, State, String)> {
        let mut out: Vec<_> =
            self.lock().iter().map(|(name, g)| (name.clone(), g.state, g.protocol_type.clone())).collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    /// Expires sessions, ends join phases at their deadline, and forgets empty groups (their
    /// committed offsets stay in the groups store).
    pub fn tick(&self, now: Instant) {
        let mut groups = self.lock();
        for group in groups.values_mut() {
            group.try_complete_join(now);
            group.expire(now);
        }
        groups.retain(|_, g| g.state != State::Empty || !g.pending.is_empty());
        let mut held = self.held.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        held.clear();
        for group in groups.values() {
            for principal in group.members.values().map(|m| &m.principal).chain(group.pending.values().map(|(_, p)| p))
            {
                *held.entry(principal.clone()).or_default() += 1;
            }
        }
    }

    /// Answers every waiting request with COORDINATOR_NOT_AVAILABLE (on shutdown).
    pub fn close(&self) {
        self.lock().clear();
    }

    /// Runs [`Self::tick`] every [`TICK`] until `shutdown` turns true, then [`Self::close`]s.
    pub async fn run(self: std::sync::Arc<Self>, mut shutdown: tokio::sync::watch::Receiver<bool>) {
        let mut interval = tokio::time::interval(TICK);
        loop {
            tokio::select! {
                _ = interval.tick() => self.tick(Instant::now()),
                _ = shutdown.wait_for(|stop| *stop) => break,
            }
        }
        self.close();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A coordinator with its ticker running (until the returned sender is dropped).
    fn coordinator() -> (std::sync::Arc<Coordinator>, tokio::sync::watch::Sender<bool>) {
        let c = std::sync::Arc::new(Coordinator::default());
        let (stop, shutdown) = tokio::sync::watch::channel(false);
        tokio::spawn(c.clone().run(shutdown));
        (c, stop)
    }

    /// Two members join `g` (each takes its member id first, then both rejoin at once): their
    /// ids and the first member's answer for generation 1.
    async fn two_members(c: &std::sync::Arc<Coordinator>, request: impl Fn(&str) -> Join) -> (String, String, Joined) {
        let a = c.join(request("")).await.member_id;
        let b = c.join(request("")).await.member_id;
        let (ca, cb) = (c.clone(), c.clone());
        let (ja, _) = tokio::join!(ca.join(request(&a)), cb.join(request(&b)));
        (a, b, ja)
    }

    fn join(member_id: &str, protocols: &[&str]) -> Join {
        Join {
            group: "g".into(),
            principal: "anonymous".into(),
            member_id: member_id.into(),
            instance_id: None,
            client_id: "c".into(),
            client_host: "/127.0.0.1".into(),
            session_timeout_ms: 10_000,
            rebalance_timeout_ms: 30_000,
            protocol_type: "consumer".into(),
            protocols: protocols.iter().map(|p| (p.to_string(), Bytes::from(p.to_string()))).collect(),
            require_known_member_id: true,
        }
    }

    /// Two members join a new group, get one generation and a leader; the leader's
    /// assignments reach the follower; a leave makes the remaining member rebalance alone.
    #[tokio::test(start_paused = true)]
    async fn two_members_join_sync_and_rebalance_when_one_leaves() {
        let (c, _ticking) = coordinator();
        let first = c.join(join("", &["range"])).await;
        assert_eq!(first.error, Some(ResponseError::MemberIdRequired));
        let second = c.join(join("", &["roundrobin", "range"])).await;
        let (a, b) = (first.member_id.clone(), second.member_id.clone());
        let (ca, cb) = (c.clone(), c.clone());
        let (ja, jb) = (join(&a, &["range"]), join(&b, &["roundrobin", "range"]));
        let (ja, jb) = tokio::join!(ca.join(ja), cb.join(jb));
        assert_eq!((ja.error, jb.error), (None, None));
        assert_eq!((ja.generation, jb.generation, &ja.protocol), (1, 1, &"range".to_string()));
        let (leader, follower) = if ja.leader == a { (ja, jb) } else { (jb, ja) };
        assert_eq!(leader.members.len(), 2, "the leader sees every member");
        assert!(follower.members.is_empty());
        let assignments = vec![(a.clone(), Bytes::from("to-a")), (b.clone(), Bytes::from("to-b"))];
        let (cf, follower_id) = (c.clone(), follower.member_id.clone());
        let waiting = tokio::spawn(async move { cf.sync("g", 1, &follower_id, vec![]).await });
        tokio::task::yield_now().await;
        let mine = c.sync("g", 1, &leader.member_id, assignments).await.unwrap();
        let theirs = waiting.await.unwrap().unwrap();
        let expect = |id: &str| Bytes::from(if id == a { "to-a" } else { "to-b" });
        assert_eq!((mine.2, theirs.2), (expect(&leader.member_id), expect(&follower.member_id)));
        assert_eq!(c.heartbeat("g", 1, &leader.member_id), Ok(()));
        assert_eq!(c.check_commit("g", 1, &leader.member_id), Ok(()));
        assert_eq!(c.check_commit("g", 0, &leader.member_id), Err(ResponseError::IllegalGeneration));
        assert_eq!(c.check_commit("g", -1, ""), Err(ResponseError::UnknownMemberId));

        assert_eq!(c.leave("g", std::slice::from_ref(&follower.member_id)), vec![Ok(())]);
        assert_eq!(c.heartbeat("g", 1, &leader.member_id), Err(ResponseError::RebalanceInProgress));
        let again = c.join(join(&leader.member_id, &["range"])).await;
        assert_eq!((again.error, again.generation, again.members.len()), (None, 2, 1));
    }

    /// A member that stops heartbeating is removed after its session timeout; the other
    /// member is asked to rejoin and the silent one's commits are refused.
    #[tokio::test(start_paused = true)]
    async fn a_silent_member_is_removed_after_its_session_timeout() {
        let (c, _ticking) = coordinator();
        let (a, b, ja) = two_members(&c, |id| join(id, &["range"])).await;
        c.sync("g", 1, &ja.leader, vec![]).await.unwrap();
        let started = Instant::now();
        while c.heartbeat("g", 1, &a).is_ok() {
            tokio::time::sleep(TICK).await;
            assert!(started.elapsed() < Duration::from_secs(12), "b was never expired");
        }
        let silent_for = started.elapsed();
        assert!(silent_for >= Duration::from_secs(10), "b expired after {silent_for:?}, its session is 10 s");
        assert_eq!(c.heartbeat("g", 1, &a), Err(ResponseError::RebalanceInProgress));
        assert_eq!(c.check_commit("g", 1, &b), Err(ResponseError::UnknownMemberId));
        let again = c.join(join(&a, &["range"])).await;
        assert_eq!((again.generation, again.members.len()), (2, 1));
    }

    /// REVIEW: a member that goes silent while the group is Stable is only dropped at the
    /// rebalance deadline (its own, client-chosen rebalance timeout: up to i32::MAX ms), not
    /// after its session timeout: `expire` skips groups in PreparingRebalance. Kafka expires
    /// it after its session timeout, so the rebalance completes then.
    #[tokio::test(start_paused = true)]
    async fn a_silent_member_is_expired_after_its_session_timeout_during_a_rebalance() {
        let (c, _ticking) = coordinator();
        let long = |id: &str| Join { rebalance_timeout_ms: 300_000, ..join(id, &["range"]) };
        let (a, _b, ja) = two_members(&c, long).await;
        c.sync("g", 1, &ja.leader, vec![]).await.unwrap();
        // From here on b is silent (crashed); a rejoins a second later (say, new subscription).
        tokio::time::sleep(Duration::from_secs(1)).await;
        let started = Instant::now();
        let rejoined = tokio::time::timeout(Duration::from_secs(400), c.join(long(&a))).await;
        assert!(
            rejoined.is_ok() && started.elapsed() < Duration::from_secs(60),
            "a's JoinGroup waited {:?} (b's rebalance timeout is 300 s) although b's 10 s session expired long before",
            started.elapsed()
        );
    }

    /// A leader that heartbeats but never sends SyncGroup is removed at the rebalance timeout; the follower
    /// waiting in SyncGroup is told to rejoin and then leads alone.
    #[tokio::test(start_paused = true)]
    async fn a_leader_that_never_syncs_is_removed_at_the_rebalance_timeout() {
        let (c, _ticking) = coordinator();
        let (a, b, ja) = two_members(&c, |id| join(id, &["range"])).await;
        let follower = if ja.leader == a { b.clone() } else { a.clone() };
        // The leader heartbeats (so its session stays alive) but never sends SyncGroup.
        let (cl, leader) = (c.clone(), ja.leader.clone());
        tokio::spawn(async move {
            while cl.heartbeat("g", 1, &leader).is_ok() {
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        });
        let started = Instant::now();
        let synced = c.sync("g", 1, &follower, vec![]).await;
        assert_eq!(synced, Err(ResponseError::RebalanceInProgress));
        assert!(started.elapsed() >= Duration::from_secs(30), "after the 30 s rebalance timeout");
        let again = c.join(join(&follower, &["range"])).await;
        assert_eq!((again.generation, again.leader, again.members.len()), (2, follower, 1));
    }

    /// Members sharing protocols only pairwise ({x,y}, {y,z}) leave no protocol for all: a
    /// third member {x,z} is refused. A handed-out member id unused for 30 s is forgotten.
    #[tokio::test(start_paused = true)]
    async fn a_protocol_must_be_common_to_all_and_unused_member_ids_expire() {
        let (c, _ticking) = coordinator();
        let first = c.join(join("", &["x", "y"])).await.member_id;
        let c1 = c.clone();
        let j1 = join(&first, &["x", "y"]);
        tokio::spawn(async move { c1.join(j1).await });
        tokio::task::yield_now().await;
        let second = c.join(join("", &["y", "z"])).await.member_id;
        let c2 = c.clone();
        let j2 = join(&second, &["y", "z"]);
        tokio::spawn(async move { c2.join(j2).await });
        tokio::task::yield_now().await;
        assert_eq!(c.join(join("", &["x", "z"])).await.error, Some(ResponseError::InconsistentGroupProtocol));
        let unused = c.join(join("", &["y"])).await.member_id;
        tokio::time::sleep(PENDING_TTL + TICK * 2).await;
        assert_eq!(c.join(join(&unused, &["y"])).await.error, Some(ResponseError::UnknownMemberId));
    }

    #[tokio::test]
    async fn joins_without_a_common_protocol_or_with_bad_timeouts_are_refused() {
        let (c, _ticking) = coordinator();
        let mut bad = join("", &["range"]);
        bad.session_timeout_ms = 100;
        assert_eq!(c.join(bad).await.error, Some(ResponseError::InvalidSessionTimeout));
        let mut first = join("", &["range"]);
        first.require_known_member_id = false;
        let cc = c.clone();
        let pending = tokio::spawn(async move { cc.join(first).await });
        tokio::task::yield_now().await;
        let mut other = join("", &["sticky"]);
        other.require_known_member_id = false;
        assert_eq!(c.join(other).await.error, Some(ResponseError::InconsistentGroupProtocol));
        c.close();
        assert_eq!(pending.await.unwrap().error, Some(ResponseError::CoordinatorNotAvailable));
    }
}
