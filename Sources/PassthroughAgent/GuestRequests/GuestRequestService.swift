import Logging
import PassthroughCore
import PassthroughSystemd
import PassthroughThreads

/// Between the guests' request channels and the supervisor: each line is rate-limited per guest,
/// decoded (``GuestRequest``) and answered with exactly one line, in the order the guest sent them.
///
/// One request per guest is carried out at a time. A line that arrives while its guest's previous
/// request is still being carried out is not carried out: it is answered `error busy`, after the
/// earlier answer, so a guest that reads one answer per line it wrote always pairs them right.
package actor GuestRequestService {
    private let supervisor: CardSupervisor
    private let source: any GuestRequestSource
    private let clock: any WaitClock
    private let rateLimit: GuestRequestRateLimit
    private let logger: Logger
    private var sessions: [GuestName: Session] = [:]
    /// What the source was last told to listen to; `nil` before the first time.
    private var watched: Set<GuestName>?
    /// Counts refreshes, so one overtaken while it asked libvirt does not undo a newer one.
    private var refreshes = 0
    /// "Look again at which guests to listen to", coalesced: a burst of lifecycle events is one look, and
    /// whoever says so (the libvirt event loop) never waits for libvirt on its account.
    private let changes: AsyncStream<Void>
    private let change: AsyncStream<Void>.Continuation

    /// Answers held back while a request of the guest is in flight; a guest writing faster than that loses
    /// the lines beyond (it gets no answer for them, and the journal says so once).
    static let maximumWaitingAnswers = 16

    /// One guest's channel, as this service sees it.
    private struct Session {
        var rateLimit: GuestRequestRateLimit
        var inFlight = false
        var waiting: [(answer: GuestAnswer, send: @Sendable (String) -> Void)] = []
        var dropping = false
    }

    package init(supervisor: CardSupervisor, source: any GuestRequestSource, logger: Logger,
                 clock: any WaitClock = ContinuousWaitClock(), rateLimit: GuestRequestRateLimit = .standard) {
        self.supervisor = supervisor
        self.source = source
        self.logger = logger
        self.clock = clock
        self.rateLimit = rateLimit
        (changes, change) = AsyncStream.makeStream(of: Void.self, bufferingPolicy: .bufferingNewest(1))
    }

    /// Until cancelled, or until the source ends. Requests in flight are cancelled with it: the supervisor
    /// stops them at their next safe point, as for a control client that hangs up.
    package func run() async {
        await withDiscardingTaskGroup { group in
            group.addTask {
                await self.refreshWatch()
                for await _ in self.changes { await self.refreshWatch() }
            }
            for await line in source.requests {
                guard let request = receive(line) else { continue }
                group.addTask { await self.carryOut(request, for: line) }
            }
            // The transport is gone: the requests in flight still finish, the watching ends.
            change.finish()
        }
    }

    /// A guest started or stopped, libvirt reconnected, the configuration was reloaded: the set of guests
    /// to listen to is looked at again, soon, on this service's own task.
    package nonisolated func guestsMayHaveChanged() {
        change.yield()
    }

    /// Tells the source which guests to listen to, when that changed.
    package func refreshWatch() async {
        refreshes += 1
        let refresh = refreshes
        let guests = await supervisor.guestsAcceptingRequests(previous: watched ?? [])
        guard refresh == refreshes, guests != watched else { return }
        watched = guests
        logger.info("listening for requests from: \(guests.isEmpty ? "no guest" : guests.map(\.rawValue).sorted().joined(separator: ", "))")
        await source.watch(guests)
    }

    // MARK: One line

    /// Decides at once what needs no supervisor (the rate limit, busy, a malformed line); a request to
    /// carry out is returned, its guest marked busy until it is answered.
    private func receive(_ line: GuestRequestLine) -> GuestRequest? {
        var session = sessions[line.guest] ?? Session(rateLimit: rateLimit)
        defer { sessions[line.guest] = session }
        if case .limited(let first, let retryAfter) = session.rateLimit.admit(at: clock.now()) {
            let seconds = Int((retryAfter / .seconds(1)).rounded(.up))
            if first {
                logger.announce(.guestRequestRefused,
                                "guest \(line.guest) sends requests faster than \(rateLimit.burst) at once and one every "
                                + "\(rateLimit.refill); turning them away (said once per burst)",
                                level: .warning, [LogMetadataKey.guest: "\(line.guest)"])
            }
            reply(.error(.rateLimited, "too many requests; try again in \(max(seconds, 1)) s"), in: &session, line)
            return nil
        }
        if session.inFlight {
            reply(.error(.busy, "the previous request of this guest is still being carried out; send one at a time"), in: &session, line)
            return nil
        }
        switch GuestRequest.decode(line.line) {
        case .failure(let error):
            logger.info("guest \(line.guest): bad request: \(error)", metadata: [LogMetadataKey.guest: "\(line.guest)"])
            reply(.error(.badRequest, "\(error)"), in: &session, line)
            return nil
        case .success(let request):
            session.inFlight = true
            return request
        }
    }

    private func carryOut(_ request: GuestRequest, for line: GuestRequestLine) async {
        let answer = await supervisor.answer(request, from: line.guest)
        line.answer(answer.line)
        guard var session = sessions[line.guest] else { return }
        for waiting in session.waiting { waiting.send(waiting.answer.line) }
        session.waiting = []
        session.dropping = false
        session.inFlight = false
        sessions[line.guest] = session
    }

    /// Sends `answer` now, or after the answer of the request in flight.
    private func reply(_ answer: GuestAnswer, in session: inout Session, _ line: GuestRequestLine) {
        guard session.inFlight else {
            line.answer(answer.line)
            return
        }
        guard session.waiting.count < Self.maximumWaitingAnswers else {
            if !session.dropping {
                logger.warning("guest \(line.guest) writes lines faster than they are answered; the lines beyond \(Self.maximumWaitingAnswers) get no answer",
                               metadata: [LogMetadataKey.guest: "\(line.guest)"])
                session.dropping = true
            }
            return
        }
        session.waiting.append((answer, line.answer))
    }
}
