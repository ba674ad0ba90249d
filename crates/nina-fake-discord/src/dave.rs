//! DAVE, Discord's end-to-end encryption of voice: the fake is the MLS delivery service and the
//! sole external sender of every call, and each fake user is a real `davey` member that
//! encrypts its Opus frames with its sender key before transport encryption.
//!
//! One [`Call`] per voice channel. Membership changes (a fake user joins or leaves, the bot
//! sends a key package or goes away) are queued and turned into rounds, one at a time:
//! external add/remove proposals at the current epoch (op 27), the first commit taken (the
//! bot's when it is a member and answers within `commit_wait`, else a fake member's), then a
//! transition: op 29 (commit) or op 30 (welcome) to the bot, which answers op 23 when it is
//! ready, and op 22 once it has (or after `transition_timeout`). Fake members switch keys at
//! op 22, as a real client does; the bot keeps old-epoch keys for a while, so nothing is lost
//! when the order is right. A call left with one member is reset (op 24 epoch 1 to the bot).
//!
//! Wire format, checked against songbird 0.6.1 / serenity-voice-model 0.3.0 (voice gateway
//! v4): binary frames carry no sequence number; op 26 is a bare KeyPackage; op 28 is an
//! MLSMessage(commit) optionally followed by a bare Welcome; op 29/30 carry a big-endian u16
//! transition id.

use std::collections::{BTreeMap, BTreeSet};
use std::num::NonZeroU16;
use std::time::Duration;

use davey::{DaveSession, ProposalsOperationType};
use openmls::prelude::tls_codec::{DeserializeBytes as _, Serialize as _, VLBytes};
use openmls::prelude::{
    BasicCredential, Ciphersuite, ExternalProposal, ExternalSender, GroupEpoch, GroupId,
    KeyPackage, KeyPackageIn, LeafNodeIndex, MlsMessageIn, OpenMlsProvider, ProtocolVersion,
    SenderExtensionIndex,
};
use openmls_basic_credential::SignatureKeyPair;
use openmls_rust_crypto::OpenMlsRustCrypto;
use serde::Serialize;
use serde_json::{Value, json};
use tokio::time::Instant;
use tracing::{debug, info, warn};

/// The DAVE protocol version the fake speaks.
pub(crate) const DAVE_VERSION: u16 = 1;

/// A DAVE failure the fake can be told to cause (see [`crate::Control::dave_fault`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub enum DaveFault {
    /// The next commit announced to the bot (op 29) is corrupt (it parses, its signature does
    /// not verify): the bot must report it (op 31), start over with a new key package and be
    /// welcomed back.
    GarbageCommit,
    /// The next welcome sent to the bot (op 30) cannot be opened (its encrypted group info is
    /// corrupt).
    MismatchedWelcome,
    /// The next fake user to join a channel is proposed to the bot without a Clients Connect
    /// (op 11) first: the bot refuses the proposal and cannot follow the commit.
    AddWithoutClientsConnect,
    /// The next transition never executes: nobody gets op 22 and fake members keep sending
    /// under the old epoch, which the bot forgets after a few seconds. Ends when the bot
    /// leaves the call (the fake then rebuilds the group).
    StuckTransition,
}

/// Timing of the fake's DAVE delivery service.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DaveTiming {
    /// How long to wait for the bot's commit (op 28) before taking a fake member's.
    pub commit_wait: Duration,
    /// How long to wait for the bot's op 23 before executing a transition anyway.
    pub transition_timeout: Duration,
}

impl Default for DaveTiming {
    fn default() -> Self {
        Self {
            commit_wait: Duration::from_millis(1000),
            transition_timeout: Duration::from_millis(3000),
        }
    }
}

/// What the fake knows about DAVE in one voice channel (see [`crate::Control::dave_state`]).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct DaveCallState {
    /// Protocol version of the call (0 = transport encryption only).
    pub protocol_version: u16,
    /// Epoch of the group (0 = no group).
    pub epoch: u64,
    /// Users whose leaves are in the group (the bot included when it is).
    pub members: Vec<u64>,
    /// Whether the bot holds the group's current state (it was welcomed or followed the last
    /// commit and has not reported a failure since).
    pub bot_in_sync: bool,
    /// Epochs the group went through (each executed commit).
    pub epoch_changes: u32,
    /// Transitions executed because the bot's op 23 did not come in time.
    pub transitions_timed_out: u32,
    /// Commits made by the bot that the fake used.
    pub bot_commits_used: u32,
    /// Key packages (op 26) the bot sent.
    pub bot_key_packages: u32,
    /// Invalid commit/welcome reports (op 31) from the bot.
    pub bot_invalid_reports: u32,
    /// Sole-member resets (op 24 with epoch 1) sent to the bot.
    pub resets: u32,
    /// True while a transition is announced and not yet executed.
    pub transition_pending: bool,
}

/// A message for the bot's voice gateway.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum ToBot {
    Json(u8, Value),
    Binary(Vec<u8>),
}

/// A membership change, proposed and committed.
struct Round {
    /// Epoch the proposals were made in.
    epoch: u64,
    /// Users to add, with their key packages.
    adds: Vec<u64>,
    /// Users to remove.
    removes: Vec<u64>,
    /// The bot was sent the proposals (its commit is awaited until `deadline`).
    bot_asked: bool,
    /// A fake member's commit, ready to use.
    fake_commit: Option<(u64, Vec<u8>, Option<Vec<u8>>)>,
    /// The fake user creating the group (rounds at epoch 0).
    creator: Option<u64>,
    deadline: Instant,
}

/// A commit announced and waiting to execute.
struct Transition {
    tid: u16,
    kind: TransitionKind,
    /// The bot was told (op 29/30/21) and its op 23 is awaited.
    waiting_bot: bool,
    /// `None`: never executes (the stuck-transition fault).
    deadline: Option<Instant>,
}

enum TransitionKind {
    Commit {
        new_epoch: u64,
        commit: Vec<u8>,
        welcome: Option<Vec<u8>>,
        adds: Vec<u64>,
        removes: Vec<u64>,
        /// The bot was among the joiners.
        bot_joins: bool,
    },
    Downgrade,
}

/// DAVE state of one voice channel.
pub(crate) struct Call {
    channel: u64,
    version: u16,
    epoch: u64,
    /// Users with a leaf in the group.
    members: BTreeSet<u64>,
    /// Fake users in the channel, each a DAVE client.
    fakes: BTreeMap<u64, DaveSession>,
    /// Clients of users who left while their leaf is still in the group: they follow commits
    /// until their removal executes (a user may leave and come back meanwhile).
    departed: BTreeMap<u64, DaveSession>,
    /// Key packages waiting to be added (fake users and the bot).
    joining: BTreeMap<u64, KeyPackage>,
    /// Members to remove.
    leaving: BTreeSet<u64>,
    /// Whether the bot holds the group's current state.
    bot_in_sync: bool,
    round: Option<Round>,
    transition: Option<Transition>,
    /// Fake users that lost the group and need a new client once their leaf is gone.
    needs_client: Vec<u64>,
    /// No new round before this (after a round nobody committed).
    retry_at: Option<Instant>,
    stats: DaveCallState,
}

/// The fake's DAVE delivery service: the external sender's key and every call.
pub(crate) struct DaveServer {
    pub(crate) enabled: bool,
    bot: u64,
    timing: DaveTiming,
    provider: OpenMlsRustCrypto,
    signer: SignatureKeyPair,
    /// Serialized `ExternalSender` (op 25 payload).
    external_sender: Vec<u8>,
    calls: BTreeMap<u64, Call>,
    next_tid: u16,
    faults: Vec<DaveFault>,
    /// Fake users may speak before the bot has the keys to hear them.
    pub(crate) early_audio: bool,
}

/// How a fake user's frame goes out.
pub(crate) enum Outgoing {
    /// Transport encryption only.
    Plain,
    /// DAVE-encrypted under `epoch`.
    Encrypted(Vec<u8>, u64),
    /// The user holds no keys: the frame cannot be sent.
    NoKeys,
}

fn ciphersuite() -> Ciphersuite {
    Ciphersuite::MLS_128_DHKEMP256_AES128GCM_SHA256_P256
}

fn version() -> NonZeroU16 {
    NonZeroU16::new(DAVE_VERSION).unwrap_or(NonZeroU16::MIN)
}

/// The user id in a DAVE credential (big-endian u64).
fn identity(bytes: &[u8]) -> Option<u64> {
    <[u8; 8]>::try_from(bytes).ok().map(u64::from_be_bytes)
}

impl DaveServer {
    pub(crate) fn new(enabled: bool, bot: u64, timing: DaveTiming) -> Self {
        let provider = OpenMlsRustCrypto::default();
        // A P-256 key pair and a basic credential, as Discord's voice servers use.
        let signer = SignatureKeyPair::new(ciphersuite().signature_algorithm())
            .expect("P-256 key generation does not fail");
        let sender = ExternalSender::new(
            signer.public().into(),
            BasicCredential::new(b"nina-fake-discord".to_vec()).into(),
        );
        let external_sender = sender
            .tls_serialize_detached()
            .expect("an external sender serializes");
        Self {
            enabled,
            bot,
            timing,
            provider,
            signer,
            external_sender,
            calls: BTreeMap::new(),
            next_tid: 0,
            faults: Vec::new(),
            early_audio: false,
        }
    }

    pub(crate) fn arm(&mut self, fault: DaveFault) {
        self.faults.push(fault);
    }

    /// Consumes an armed fault.
    pub(crate) fn take_fault(&mut self, fault: DaveFault) -> bool {
        match self.faults.iter().position(|f| *f == fault) {
            Some(i) => {
                self.faults.remove(i);
                true
            }
            None => false,
        }
    }

    fn tid(&mut self) -> u16 {
        self.next_tid = self.next_tid.checked_add(1).unwrap_or(1);
        self.next_tid
    }

    fn call(&mut self, channel: u64) -> &mut Call {
        let version = if self.enabled { DAVE_VERSION } else { 0 };
        self.calls.entry(channel).or_insert_with(|| Call {
            channel,
            version,
            epoch: 0,
            members: BTreeSet::new(),
            fakes: BTreeMap::new(),
            departed: BTreeMap::new(),
            joining: BTreeMap::new(),
            leaving: BTreeSet::new(),
            bot_in_sync: false,
            round: None,
            transition: None,
            needs_client: Vec::new(),
            retry_at: None,
            stats: DaveCallState::default(),
        })
    }

    /// Protocol version to offer the bot in op 4 for `channel`.
    pub(crate) fn version_for(&mut self, channel: u64) -> u16 {
        self.call(channel).version
    }

    /// The op 25 frame.
    pub(crate) fn external_sender_frame(&self) -> Vec<u8> {
        [&[25u8][..], &self.external_sender].concat()
    }

    pub(crate) fn state(&self, channel: u64) -> Option<DaveCallState> {
        self.calls.get(&channel).map(|c| {
            let mut s = c.stats.clone();
            s.protocol_version = c.version;
            s.epoch = c.epoch;
            s.members = c.members.iter().copied().collect();
            s.bot_in_sync = c.bot_in_sync;
            s.transition_pending = c.transition.is_some();
            s
        })
    }

    /// A fresh DAVE client for fake user `uid` in `channel`, with its key package.
    fn new_client(&self, uid: u64, channel: u64) -> Option<(DaveSession, KeyPackage)> {
        let mut s = DaveSession::new(version(), uid, channel, None).ok()?;
        s.set_external_sender(&self.external_sender).ok()?;
        let kp = s.create_key_package().ok()?;
        let kp = self.validate_key_package(&kp, uid)?;
        Some((s, kp))
    }

    /// Parses and checks a key package: signature, and a credential naming `uid`.
    fn validate_key_package(&self, bytes: &[u8], uid: u64) -> Option<KeyPackage> {
        let kp = KeyPackageIn::tls_deserialize_exact_bytes(bytes).ok()?;
        let kp = kp
            .validate(self.provider.crypto(), ProtocolVersion::Mls10)
            .ok()?;
        (identity(kp.leaf_node().credential().serialized_content()) == Some(uid)).then_some(kp)
    }

    /// A fake user entered `channel`.
    pub(crate) fn user_joined(&mut self, channel: u64, uid: u64) {
        if !self.call(channel).is_dave() {
            return;
        }
        let Some((session, kp)) = self.new_client(uid, channel) else {
            warn!(uid, "could not make a DAVE client for a fake user");
            return;
        };
        let call = self.call(channel);
        call.fakes.insert(uid, session);
        call.joining.insert(uid, kp);
    }

    /// A fake user left `channel`.
    pub(crate) fn user_left(&mut self, channel: u64, uid: u64) {
        let call = self.call(channel);
        call.joining.remove(&uid);
        let session = call.fakes.remove(&uid);
        if call.members.contains(&uid) {
            call.leaving.insert(uid);
            if let Some(s) = session {
                call.departed.insert(uid, s);
            }
        }
    }

    /// The bot's voice connection to `channel` is gone (left, kicked, or replaced).
    pub(crate) fn bot_gone(&mut self, channel: u64) {
        let bot = self.bot;
        let Some(call) = self.calls.get_mut(&channel) else {
            return;
        };
        call.joining.remove(&bot);
        call.bot_in_sync = false;
        if call.members.contains(&bot) {
            call.leaving.insert(bot);
        }
        if let Some(r) = &mut call.round {
            r.bot_asked = false;
        }
        let stuck = match &mut call.transition {
            Some(t) => {
                t.waiting_bot = false;
                t.deadline.is_none()
            }
            None => false,
        };
        if stuck {
            // A stuck transition is abandoned: the group is rebuilt from scratch.
            info!(
                channel,
                "stuck DAVE transition abandoned; rebuilding the group"
            );
            self.rebuild(channel);
        }
    }

    /// Forgets `channel`'s group and gives every fake user in it a new client.
    fn rebuild(&mut self, channel: u64) {
        let call = self.call(channel);
        call.reset_group();
        let users: Vec<u64> = std::mem::take(&mut call.fakes).into_keys().collect();
        for u in users {
            self.user_joined(channel, u);
        }
    }

    /// A binary frame from the bot (op 26 or 28) on its connection to `channel`.
    pub(crate) fn bot_binary(&mut self, channel: u64, data: &[u8], now: Instant) -> Vec<ToBot> {
        let bot = self.bot;
        match data.first() {
            Some(26) => {
                let Some(kp) = self.validate_key_package(&data[1..], bot) else {
                    warn!(channel, "bot sent an invalid DAVE key package");
                    return Vec::new();
                };
                let call = self.call(channel);
                call.stats.bot_key_packages += 1;
                if !call.is_dave() {
                    return Vec::new();
                }
                call.bot_in_sync = false;
                if call.members.contains(&bot) {
                    // A new key package from a member: its old leaf goes, the new one comes.
                    call.leaving.insert(bot);
                }
                call.joining.insert(bot, kp);
                debug!(channel, "bot key package received");
                Vec::new()
            }
            Some(28) => {
                let call = self.call(channel);
                let Some(round) = call.round.as_mut().filter(|r| r.bot_asked) else {
                    debug!(channel, "bot commit outside a round; ignored");
                    return Vec::new();
                };
                let Ok((msg, rest)) = MlsMessageIn::tls_deserialize_bytes(&data[1..]) else {
                    warn!(channel, "bot sent an unparsable commit");
                    return Vec::new();
                };
                let epoch_ok = msg
                    .clone()
                    .try_into_protocol_message()
                    .is_ok_and(|m| m.epoch().as_u64() == round.epoch);
                if !epoch_ok {
                    warn!(channel, "bot commit for another epoch; ignored");
                    return Vec::new();
                }
                let welcome = (!rest.is_empty()).then(|| rest.to_vec());
                let commit = data[1..data.len() - rest.len()].to_vec();
                call.stats.bot_commits_used += 1;
                match call.round.take() {
                    Some(round) => self.announce(channel, round, bot, commit, welcome, now),
                    None => Vec::new(),
                }
            }
            other => {
                debug!(?other, "unknown binary voice opcode from the bot");
                Vec::new()
            }
        }
    }

    /// The bot's op 23 (ready for transition `tid`).
    pub(crate) fn bot_ready(&mut self, channel: u64, tid: u16) {
        if let Some(t) = self
            .calls
            .get_mut(&channel)
            .and_then(|c| c.transition.as_mut())
            .filter(|t| t.tid == tid)
        {
            t.waiting_bot = false;
        }
    }

    /// The bot's op 31 (it could not process the commit or welcome of `tid`).
    pub(crate) fn bot_invalid(&mut self, channel: u64, tid: u16) {
        let Some(call) = self.calls.get_mut(&channel) else {
            return;
        };
        call.stats.bot_invalid_reports += 1;
        call.bot_in_sync = false;
        if let Some(t) = call.transition.as_mut().filter(|t| t.tid == tid) {
            t.waiting_bot = false;
        }
        info!(
            channel,
            tid, "bot reported an invalid DAVE commit or welcome"
        );
    }

    /// Downgrades `channel` to transport encryption only (op 21 version 0).
    pub(crate) fn downgrade(&mut self, channel: u64, bot_here: bool, now: Instant) -> Vec<ToBot> {
        let tid = self.tid();
        let timeout = self.timing.transition_timeout;
        let call = self.call(channel);
        call.round = None;
        call.transition = Some(Transition {
            tid,
            kind: TransitionKind::Downgrade,
            waiting_bot: bot_here,
            deadline: Some(now + timeout),
        });
        if bot_here {
            vec![ToBot::Json(
                21,
                json!({"protocol_version": 0, "transition_id": tid}),
            )]
        } else {
            Vec::new()
        }
    }

    /// Upgrades `channel` to DAVE (op 24 epoch 1: everyone makes a new key package).
    pub(crate) fn upgrade(&mut self, channel: u64, users: &[u64], bot_here: bool) -> Vec<ToBot> {
        let call = self.call(channel);
        call.version = DAVE_VERSION;
        call.reset_group();
        for &u in users {
            self.user_joined(channel, u);
        }
        if bot_here {
            vec![ToBot::Json(
                24,
                json!({"protocol_version": DAVE_VERSION, "epoch": 1}),
            )]
        } else {
            Vec::new()
        }
    }

    /// Moves every call forward: starts rounds, takes commits, executes transitions.
    /// `bot_in` lists the channels the bot is connected to (media ready).
    pub(crate) fn advance(&mut self, now: Instant, bot_in: &[u64]) -> Vec<(u64, ToBot)> {
        let mut out = Vec::new();
        let channels: Vec<u64> = self.calls.keys().copied().collect();
        for ch in channels {
            // A few steps per call and tick are enough: each step makes progress or stops.
            for _ in 0..8 {
                let bot_here = bot_in.contains(&ch);
                match self.step(ch, now, bot_here) {
                    Some(msgs) => out.extend(msgs.into_iter().map(|m| (ch, m))),
                    None => break,
                }
            }
        }
        out
    }

    /// One step of `channel`'s state machine; `None` when there is nothing to do now.
    fn step(&mut self, channel: u64, now: Instant, bot_here: bool) -> Option<Vec<ToBot>> {
        let bot = self.bot;
        let call = self.calls.get_mut(&channel)?;
        if let Some(t) = &call.transition {
            let due = !t.waiting_bot || t.deadline.is_some_and(|d| now >= d);
            if !due || t.deadline.is_none() {
                return None;
            }
            if t.waiting_bot {
                call.stats.transitions_timed_out += 1;
            }
            let t = call.transition.take()?;
            return Some(call.execute(t, bot));
        }
        if let Some(r) = &call.round {
            if r.bot_asked && now < r.deadline {
                return None;
            }
            let r = call.round.take()?;
            return match r.fake_commit.clone() {
                Some((by, commit, welcome)) => {
                    Some(self.announce(channel, r, by, commit, welcome, now))
                }
                None => {
                    // Nobody committed: the proposals are dropped (pending commits of the
                    // fake members are cleared by their next round) and proposed again later.
                    warn!(
                        channel,
                        "no commit for the DAVE proposals; will propose again"
                    );
                    let retry = now + self.timing.commit_wait;
                    self.call(channel).retry_at = Some(retry);
                    None
                }
            };
        }
        if !call.is_dave() || call.retry_at.is_some_and(|t| now < t) {
            return None;
        }
        call.retry_at = None;
        if !call.needs_client.is_empty() {
            let users = std::mem::take(&mut call.needs_client);
            for u in users {
                self.user_joined(channel, u);
            }
            return Some(Vec::new());
        }
        let call = self.calls.get_mut(&channel)?;
        // Anything to do?
        let removes: Vec<u64> = call.leaving.iter().copied().collect();
        let adds: Vec<u64> = call
            .joining
            .keys()
            .copied()
            .filter(|u| *u != bot || bot_here)
            .collect();
        if removes.is_empty() && adds.is_empty() {
            return None;
        }
        if call.members.is_empty() {
            return self.form_group(channel, adds, now);
        }
        let remaining = call.members.len() - removes.len();
        if remaining + adds.len() <= 1 {
            return Some(self.sole_member_reset(channel, bot_here));
        }
        if remaining == 0 {
            // Everybody leaves and only newcomers stay: start over.
            self.rebuild(channel);
            return Some(Vec::new());
        }
        Some(self.propose(channel, adds, removes, now, bot_here))
    }

    /// No group yet: a fake user creates it by committing the others' adds (the bot never
    /// creates it: a call with two participants has at least one fake user).
    fn form_group(&mut self, channel: u64, adds: Vec<u64>, now: Instant) -> Option<Vec<ToBot>> {
        let bot = self.bot;
        if adds.len() < 2 {
            return None;
        }
        let creator = adds.iter().copied().find(|u| *u != bot)?;
        let others: Vec<u64> = adds.into_iter().filter(|u| *u != creator).collect();
        let proposals = self.proposals(channel, 0, &others, &[])?;
        let commit_wait = self.timing.commit_wait;
        let call = self.calls.get_mut(&channel)?;
        let session = call.fakes.get_mut(&creator)?;
        match session.process_proposals(ProposalsOperationType::APPEND, &proposals, None) {
            Ok(Some(cw)) => {
                call.round = Some(Round {
                    epoch: 0,
                    adds: others,
                    removes: Vec::new(),
                    bot_asked: false,
                    fake_commit: Some((creator, cw.commit, cw.welcome)),
                    creator: Some(creator),
                    deadline: now + commit_wait,
                });
                Some(Vec::new())
            }
            other => {
                warn!(channel, ok = other.is_ok(), "fake creator did not commit");
                call.retry_at = Some(now + commit_wait);
                None
            }
        }
    }

    /// Proposals (op 27 body, a VLBytes of MLSMessages) signed as the external sender.
    fn proposals(
        &self,
        channel: u64,
        epoch: u64,
        adds: &[u64],
        removes: &[u64],
    ) -> Option<Vec<u8>> {
        let call = self.calls.get(&channel)?;
        let gid = GroupId::from_slice(&channel.to_be_bytes());
        let (epoch, sender) = (GroupEpoch::from(epoch), SenderExtensionIndex::new(0));
        let mut proposals = Vec::with_capacity(removes.len() + adds.len());
        for u in removes {
            let leaf = call.leaf_of(*u)?;
            proposals.push(
                ExternalProposal::new_remove::<OpenMlsRustCrypto>(
                    leaf,
                    gid.clone(),
                    epoch,
                    &self.signer,
                    sender,
                )
                .ok()?,
            );
        }
        for u in adds {
            let kp = call.joining.get(u)?.clone();
            proposals.push(
                ExternalProposal::new_add::<OpenMlsRustCrypto>(
                    kp,
                    gid.clone(),
                    epoch,
                    &self.signer,
                    sender,
                )
                .ok()?,
            );
        }
        let mut msgs = Vec::new();
        for m in proposals {
            msgs.extend(m.tls_serialize_detached().ok()?);
        }
        VLBytes::new(msgs).tls_serialize_detached().ok()
    }

    /// Sends proposals to the group's members (the bot, when in sync, and the fake members).
    fn propose(
        &mut self,
        channel: u64,
        adds: Vec<u64>,
        removes: Vec<u64>,
        now: Instant,
        bot_here: bool,
    ) -> Vec<ToBot> {
        let bot = self.bot;
        let epoch = self.calls.get(&channel).map_or(0, |c| c.epoch);
        let Some(proposals) = self.proposals(channel, epoch, &adds, &removes) else {
            warn!(channel, "could not build DAVE proposals; will try again");
            self.call(channel).retry_at = Some(now + self.timing.commit_wait);
            return Vec::new();
        };
        let commit_wait = self.timing.commit_wait;
        let call = self.call(channel);
        let mut round = Round {
            epoch,
            adds,
            removes,
            bot_asked: false,
            fake_commit: None,
            creator: None,
            deadline: now + commit_wait,
        };
        for (uid, s) in call.fakes.iter_mut() {
            if !call.members.contains(uid) || round.removes.contains(uid) {
                continue;
            }
            match s.process_proposals(ProposalsOperationType::APPEND, &proposals, None) {
                Ok(Some(cw)) if round.fake_commit.is_none() => {
                    round.fake_commit = Some((*uid, cw.commit, cw.welcome));
                }
                Ok(_) => {}
                Err(e) => warn!(uid, "fake member refused proposals: {e}"),
            }
        }
        let mut out = Vec::new();
        if bot_here
            && call.bot_in_sync
            && call.members.contains(&bot)
            && !round.removes.contains(&bot)
        {
            round.bot_asked = true;
            out.push(ToBot::Binary(proposals_frame(&proposals)));
        }
        call.round = Some(round);
        out
    }

    /// Takes `commit` as the epoch's commit and announces the transition.
    fn announce(
        &mut self,
        channel: u64,
        round: Round,
        by: u64,
        commit: Vec<u8>,
        welcome: Option<Vec<u8>>,
        now: Instant,
    ) -> Vec<ToBot> {
        let bot = self.bot;
        let tid = self.tid();
        let stuck = self.take_fault(DaveFault::StuckTransition);
        let garbage = self.take_fault_if(DaveFault::GarbageCommit, channel, |c| {
            c.bot_in_sync && c.members.contains(&bot) && !round.adds.contains(&bot)
        });
        let bad_welcome = self.take_fault_if(DaveFault::MismatchedWelcome, channel, |_| {
            round.adds.contains(&bot)
        });
        let timeout = self.timing.transition_timeout;
        let call = self.call(channel);
        if let Some(c) = round.creator {
            call.joining.remove(&c);
            call.members.insert(c);
        }
        // The key packages are used: one that arrives from now on is a newer one.
        for u in &round.adds {
            call.joining.remove(u);
        }
        let bot_joins = round.adds.contains(&bot);
        let bot_stays = call.members.contains(&bot) && !round.removes.contains(&bot);
        let mut out = Vec::new();
        let mut waiting_bot = false;
        if bot_joins {
            let mut w = welcome.clone().unwrap_or_default();
            if bad_welcome {
                // The last byte is in the encrypted group info: the welcome parses, and fails.
                corrupt_last_byte(&mut w);
            }
            out.push(ToBot::Binary(tid_frame(30, tid, &w)));
            call.bot_in_sync = true;
            waiting_bot = true;
        } else if bot_stays && call.bot_in_sync {
            let mut c = commit.clone();
            if garbage {
                // The last byte is in the signature: the commit parses, and fails to verify.
                // (Unparsable bytes would do too, but tls_codec 0.4.2 debug-asserts on some
                // length prefixes, which would crash a debug build of the bot instead.)
                corrupt_last_byte(&mut c);
            }
            out.push(ToBot::Binary(tid_frame(29, tid, &c)));
            waiting_bot = true;
        }
        debug!(
            channel,
            tid,
            by,
            epoch = round.epoch + 1,
            "DAVE commit announced"
        );
        call.transition = Some(Transition {
            tid,
            kind: TransitionKind::Commit {
                new_epoch: round.epoch + 1,
                commit,
                welcome,
                adds: round.adds,
                removes: round.removes,
                bot_joins,
            },
            waiting_bot,
            deadline: (!stuck).then_some(now + timeout),
        });
        out
    }

    fn take_fault_if(
        &mut self,
        fault: DaveFault,
        channel: u64,
        pred: impl Fn(&Call) -> bool,
    ) -> bool {
        let applies = self.calls.get(&channel).is_some_and(pred);
        applies && self.take_fault(fault)
    }

    /// One member left (the bot or a fake user): its state is reset, and it waits alone.
    fn sole_member_reset(&mut self, channel: u64, bot_here: bool) -> Vec<ToBot> {
        let bot = self.bot;
        let call = self.call(channel);
        let survivors: Vec<u64> = call
            .members
            .iter()
            .copied()
            .filter(|u| !call.leaving.contains(u))
            .chain(call.joining.keys().copied())
            .collect();
        call.reset_group();
        call.stats.resets += 1;
        let mut out = Vec::new();
        for u in survivors {
            if u == bot {
                if bot_here {
                    out.push(ToBot::Json(
                        24,
                        json!({"protocol_version": DAVE_VERSION, "epoch": 1}),
                    ));
                    out.push(ToBot::Json(
                        21,
                        json!({"protocol_version": DAVE_VERSION, "transition_id": 0}),
                    ));
                }
            } else {
                self.calls.get_mut(&channel).map(|c| c.fakes.remove(&u));
                self.user_joined(channel, u);
            }
        }
        out
    }

    /// Encrypts `frame` for fake user `uid` in `channel`, as its client would send it.
    pub(crate) fn encrypt(&mut self, channel: u64, uid: u64, frame: &[u8]) -> Outgoing {
        let Some(call) = self.calls.get_mut(&channel).filter(|c| c.is_dave()) else {
            return Outgoing::Plain;
        };
        let epoch = call.epoch;
        match call.fakes.get_mut(&uid) {
            Some(s) if s.is_ready() => match s.encrypt_opus(frame) {
                Ok(b) => Outgoing::Encrypted(b.into_owned(), epoch),
                Err(_) => Outgoing::NoKeys,
            },
            _ => Outgoing::NoKeys,
        }
    }

    /// Whether fake user `uid` may start speaking in `channel`: without DAVE always; with it,
    /// once the user holds keys and the bot is in the group (or early audio is allowed).
    pub(crate) fn may_start(&self, channel: u64, uid: u64) -> bool {
        let Some(call) = self.calls.get(&channel).filter(|c| c.is_dave()) else {
            return true;
        };
        let user_ready = call.members.contains(&uid)
            && call.fakes.get(&uid).is_some_and(|s| s.is_ready())
            && !call.leaving.contains(&uid);
        let bot_ready = call.bot_in_sync
            && call.members.contains(&self.bot)
            && !call.joining.contains_key(&self.bot)
            && call.transition.as_ref().is_none_or(|t| !t.bot_joining());
        user_ready && (bot_ready || self.early_audio)
    }
}

impl Transition {
    fn bot_joining(&self) -> bool {
        matches!(
            self.kind,
            TransitionKind::Commit {
                bot_joins: true,
                ..
            }
        )
    }
}

impl Call {
    fn is_dave(&self) -> bool {
        self.version != 0
    }

    /// Forgets the group; everyone left in the channel starts over with a pending group.
    fn reset_group(&mut self) {
        self.departed.clear();
        self.members.clear();
        self.leaving.clear();
        self.joining.clear();
        self.round = None;
        self.transition = None;
        self.epoch = 0;
        self.bot_in_sync = false;
    }

    /// The leaf index of `uid`, read from a fake member's view of the group (a member that
    /// stays, if there is one).
    fn leaf_of(&self, uid: u64) -> Option<LeafNodeIndex> {
        let want = uid.to_be_bytes();
        let views = |staying: bool| {
            self.fakes
                .iter()
                .chain(self.departed.iter())
                .filter(move |(u, s)| {
                    self.members.contains(u)
                        && s.is_ready()
                        && (!staying || !self.leaving.contains(u))
                })
                .filter_map(|(_, s)| s.group())
        };
        views(true)
            .chain(views(false))
            .flat_map(|g| g.members().collect::<Vec<_>>())
            .find(|m| m.credential.serialized_content() == want)
            .map(|m| m.index)
    }

    /// Executes a transition: fake members switch keys, the bot gets op 22.
    fn execute(&mut self, t: Transition, bot: u64) -> Vec<ToBot> {
        let mut out = Vec::new();
        let bot_member_before = self.members.contains(&bot);
        match t.kind {
            TransitionKind::Downgrade => {
                self.reset_group();
                self.fakes.clear();
                self.version = 0;
                out.push(ToBot::Json(22, json!({"transition_id": t.tid})));
            }
            TransitionKind::Commit {
                new_epoch,
                commit,
                welcome,
                adds,
                removes,
                bot_joins,
            } => {
                for u in &removes {
                    self.members.remove(u);
                    self.leaving.remove(u);
                    if self.departed.remove(u).is_none() && *u != bot && !adds.contains(u) {
                        self.fakes.remove(u);
                    }
                }
                // Departed users still in the group follow the commit (their views of the
                // tree serve later removals); one that cannot is simply dropped.
                let members = &self.members;
                self.departed
                    .retain(|uid, s| members.contains(uid) && s.process_commit(&commit).is_ok());
                let mut broken = Vec::new();
                for (uid, s) in self.fakes.iter_mut() {
                    if adds.contains(uid) {
                        let ok = welcome
                            .as_deref()
                            .is_some_and(|w| s.process_welcome(w).is_ok());
                        if !ok {
                            broken.push(*uid);
                        }
                    } else if self.members.contains(uid)
                        && let Err(e) = s.process_commit(&commit)
                    {
                        warn!(uid, "fake member could not follow the commit: {e}");
                        broken.push(*uid);
                    }
                }
                for u in &adds {
                    self.members.insert(*u);
                }
                if self.members.contains(&bot) && !self.bot_in_sync {
                    // The bot reported this commit or welcome invalid: its leaf is stale.
                    self.leaving.insert(bot);
                }
                self.epoch = new_epoch;
                self.stats.epoch_changes += 1;
                for u in broken {
                    // Its leaf is stale: remove it, and add it back with a new client.
                    self.leaving.insert(u);
                    self.needs_client.push(u);
                    warn!(uid = u, "fake member lost the group; it will be re-added");
                }
                if bot_joins || (bot_member_before && self.members.contains(&bot)) {
                    out.push(ToBot::Json(22, json!({"transition_id": t.tid})));
                }
                info!(
                    channel = self.channel,
                    epoch = self.epoch,
                    members = self.members.len(),
                    "DAVE transition executed"
                );
            }
        }
        out
    }
}

fn corrupt_last_byte(bytes: &mut [u8]) {
    if let Some(b) = bytes.last_mut() {
        *b ^= 0x55;
    }
}

/// `[27][0 = append] VLBytes(proposals)`.
fn proposals_frame(vl_proposals: &[u8]) -> Vec<u8> {
    [&[27u8, 0][..], vl_proposals].concat()
}

/// `[op][u16 BE transition id] body`.
fn tid_frame(op: u8, tid: u16, body: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(3 + body.len());
    v.push(op);
    v.extend_from_slice(&tid.to_be_bytes());
    v.extend_from_slice(body);
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    const BOT: u64 = 1_100_000_000_000_000_001;
    const CH: u64 = 1_100_000_000_000_000_300;

    fn server() -> DaveServer {
        DaveServer::new(true, BOT, DaveTiming::default())
    }

    fn decrypt_as(
        server: &mut DaveServer,
        reader: u64,
        sender: u64,
        frame: &[u8],
    ) -> Option<Vec<u8>> {
        let s = server.calls.get_mut(&CH)?.fakes.get_mut(&reader)?;
        s.decrypt(sender, davey::MediaType::AUDIO, frame).ok()
    }

    #[test]
    fn fake_users_form_a_group_and_read_each_others_frames() {
        let mut d = server();
        let now = Instant::now();
        d.user_joined(CH, 1);
        assert!(d.advance(now, &[]).is_empty());
        assert_eq!(d.state(CH).expect("call").epoch, 0, "one user: no group");
        d.user_joined(CH, 2);
        d.advance(now, &[]);
        let st = d.state(CH).expect("call");
        assert_eq!((st.epoch, st.members.clone()), (1, vec![1, 2]));
        let opus = [0x78u8, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10];
        let Outgoing::Encrypted(ct, 1) = d.encrypt(CH, 1, &opus) else {
            panic!("user 1 encrypts under epoch 1")
        };
        assert_ne!(ct, opus);
        assert_eq!(&ct[ct.len() - 2..], &[0xFA, 0xFA]);
        assert_eq!(decrypt_as(&mut d, 2, 1, &ct).as_deref(), Some(&opus[..]));
        // A third joins: epoch 2, and the newcomer reads the first user's new frames.
        d.user_joined(CH, 3);
        d.advance(now, &[]);
        assert_eq!(d.state(CH).expect("call").epoch, 2);
        let Outgoing::Encrypted(ct, 2) = d.encrypt(CH, 1, &opus) else {
            panic!("epoch 2")
        };
        assert_eq!(decrypt_as(&mut d, 3, 1, &ct).as_deref(), Some(&opus[..]));
        // One leaves: epoch 3 with two members.
        d.user_left(CH, 2);
        d.advance(now, &[]);
        let st = d.state(CH).expect("call");
        assert_eq!((st.epoch, st.members), (3, vec![1, 3]));
        // The last but one leaves: the survivor is alone, the group is gone.
        d.user_left(CH, 3);
        d.advance(now, &[]);
        let st = d.state(CH).expect("call");
        assert_eq!((st.epoch, st.members.len(), st.resets), (0, 0, 1));
    }

    /// A bot simulated with davey, answering the server as songbird 0.6.1 does.
    struct SimBot {
        s: DaveSession,
        recognized: Vec<u64>,
        invalid: u32,
    }

    impl SimBot {
        fn join(d: &mut DaveServer, now: Instant) -> Self {
            let mut s = DaveSession::new(version(), BOT, CH, None).expect("session");
            s.set_external_sender(&d.external_sender)
                .expect("external sender");
            let kp = s.create_key_package().expect("kp");
            d.call(CH);
            let out = d.bot_binary(CH, &[&[26u8][..], &kp].concat(), now);
            assert!(out.is_empty());
            Self {
                s,
                recognized: Vec::new(),
                invalid: 0,
            }
        }

        /// Handles the server's messages; returns the bot's binary replies and op 23/31.
        fn handle(&mut self, d: &mut DaveServer, msgs: Vec<ToBot>, now: Instant) -> Vec<ToBot> {
            let mut replies = Vec::new();
            for m in msgs {
                match m {
                    ToBot::Binary(b) if b[0] == 27 => {
                        if let Ok(Some(cw)) = self.s.process_proposals(
                            ProposalsOperationType::APPEND,
                            &b[2..],
                            Some(&self.recognized),
                        ) {
                            let frame =
                                [&[28u8][..], &cw.commit, &cw.welcome.unwrap_or_default()].concat();
                            replies.extend(d.bot_binary(CH, &frame, now));
                        }
                    }
                    ToBot::Binary(b) if b[0] == 29 || b[0] == 30 => {
                        let tid = u16::from_be_bytes([b[1], b[2]]);
                        let ok = if b[0] == 29 {
                            self.s.process_commit(&b[3..]).is_ok()
                        } else {
                            self.s.process_welcome(&b[3..]).is_ok()
                        };
                        if ok {
                            d.bot_ready(CH, tid);
                        } else {
                            self.invalid += 1;
                            d.bot_invalid(CH, tid);
                            self.rekey(d, now);
                        }
                    }
                    ToBot::Json(24, _) => self.rekey(d, now),
                    _ => {}
                }
            }
            replies
        }

        fn rekey(&mut self, d: &mut DaveServer, now: Instant) {
            self.s.reinit(version(), BOT, CH, None).expect("reinit");
            let kp = self.s.create_key_package().expect("kp");
            d.bot_binary(CH, &[&[26u8][..], &kp].concat(), now);
        }

        /// Runs the server and this bot until nothing moves.
        fn settle(&mut self, d: &mut DaveServer, now: &mut Instant) {
            for _ in 0..50 {
                let out: Vec<ToBot> = d.advance(*now, &[CH]).into_iter().map(|(_, m)| m).collect();
                let replies = self.handle(d, out, *now);
                let more = self.handle(d, replies, *now);
                assert!(more.is_empty());
                *now += Duration::from_millis(100);
            }
        }
    }

    fn reads(d: &mut DaveServer, bot: &mut SimBot, uid: u64) -> bool {
        let opus = [0x78u8, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0];
        match d.encrypt(CH, uid, &opus) {
            Outgoing::Encrypted(ct, _) => bot
                .s
                .decrypt(uid, davey::MediaType::AUDIO, &ct)
                .is_ok_and(|p| p == opus),
            _ => false,
        }
    }

    #[test]
    fn a_bot_joins_follows_joins_and_leaves_and_recovers_from_faults() {
        let mut d = server();
        let mut now = Instant::now();
        d.user_joined(CH, 1);
        d.user_joined(CH, 2);
        d.advance(now, &[]);
        let mut bot = SimBot::join(&mut d, now);
        bot.recognized = vec![1, 2, 3, 4];
        bot.settle(&mut d, &mut now);
        let st = d.state(CH).expect("call");
        assert_eq!((st.epoch, st.bot_in_sync, st.members.len()), (2, true, 3));
        assert!(d.may_start(CH, 1) && reads(&mut d, &mut bot, 1));
        // A third user joins: the bot's commit is taken (it answers within the wait).
        d.user_joined(CH, 3);
        bot.settle(&mut d, &mut now);
        let st = d.state(CH).expect("call");
        assert_eq!((st.epoch, st.bot_commits_used), (3, 1));
        assert!(reads(&mut d, &mut bot, 3));
        // User 1 leaves and comes back before anything executes.
        d.user_left(CH, 1);
        d.user_joined(CH, 1);
        bot.settle(&mut d, &mut now);
        let st = d.state(CH).expect("call");
        assert!(st.members.contains(&1) && st.bot_in_sync && !st.transition_pending);
        assert!(
            reads(&mut d, &mut bot, 1),
            "the returning user's new keys are known"
        );
        // A garbage commit: the bot reports it, starts over and is welcomed back.
        d.arm(DaveFault::GarbageCommit);
        d.user_joined(CH, 4);
        bot.settle(&mut d, &mut now);
        let st = d.state(CH).expect("call");
        assert_eq!(
            (bot.invalid, st.bot_invalid_reports, st.bot_in_sync),
            (1, 1, true)
        );
        assert!(reads(&mut d, &mut bot, 4) && reads(&mut d, &mut bot, 2));
        // A mismatched welcome on the way back from another garbage commit.
        d.arm(DaveFault::GarbageCommit);
        d.arm(DaveFault::MismatchedWelcome);
        d.user_left(CH, 4);
        bot.settle(&mut d, &mut now);
        let st = d.state(CH).expect("call");
        assert_eq!((bot.invalid, st.bot_in_sync), (3, true), "{st:?}");
        assert!(!st.members.contains(&4));
        assert!(reads(&mut d, &mut bot, 3));
        // A stuck transition: nothing executes, until the bot leaves; the group is rebuilt.
        d.arm(DaveFault::StuckTransition);
        d.user_left(CH, 3);
        bot.settle(&mut d, &mut now);
        assert!(d.state(CH).expect("call").transition_pending);
        d.bot_gone(CH);
        d.advance(now, &[]);
        let st = d.state(CH).expect("call");
        assert!(!st.transition_pending && !st.members.contains(&BOT));
        // Everybody but the bot leaves: the bot is alone and told to reset (op 24).
        let mut bot = SimBot::join(&mut d, now);
        bot.recognized = vec![1, 2];
        bot.settle(&mut d, &mut now);
        assert!(reads(&mut d, &mut bot, 1));
        d.user_left(CH, 1);
        d.user_left(CH, 2);
        bot.settle(&mut d, &mut now);
        let st = d.state(CH).expect("call");
        assert_eq!((st.epoch, st.resets), (0, 1));
    }

    #[test]
    fn the_bot_alone_first_then_two_users_hears_the_creator_throughout() {
        let mut d = server();
        let mut now = Instant::now();
        let mut bot = SimBot::join(&mut d, now);
        bot.recognized = vec![1, 2];
        bot.settle(&mut d, &mut now);
        // Both join at once: the second join waits for the first one's transition.
        d.user_joined(CH, 1);
        let out: Vec<ToBot> = d.advance(now, &[CH]).into_iter().map(|(_, m)| m).collect();
        d.user_joined(CH, 2);
        let replies = bot.handle(&mut d, out, now);
        bot.handle(&mut d, replies, now);
        let out: Vec<ToBot> = d.advance(now, &[CH]).into_iter().map(|(_, m)| m).collect();
        assert!(d.may_start(CH, 1), "{:?}", d.state(CH));
        assert!(
            reads(&mut d, &mut bot, 1),
            "the creator is heard at epoch 1"
        );
        let replies = bot.handle(&mut d, out, now);
        bot.handle(&mut d, replies, now);
        bot.settle(&mut d, &mut now);
        let st = d.state(CH).expect("call");
        assert_eq!((st.epoch, st.members.len()), (2, 3));
        assert!(
            reads(&mut d, &mut bot, 1),
            "the creator is heard at epoch 2"
        );
        assert!(reads(&mut d, &mut bot, 2));
    }
}
