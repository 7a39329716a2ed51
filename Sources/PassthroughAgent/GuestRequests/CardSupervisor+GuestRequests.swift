import Logging
import PassthroughCore
import PassthroughLibvirt
import PassthroughSystemd

/// The supervisor's side of guest requests: who may ask (``GuestRequestPolicy``), and the same reflash
/// transitions as `reflash --prepare|--finish` from the host, with the same rules (detach from the guest
/// first, nobody holding the card, the guard). What a guest is told never names another card or guest,
/// an address or a path: the details go to the journal.
extension CardSupervisor {
    /// Answers one request that came over `guest`'s own channel.
    package func answer(_ request: GuestRequest, from guest: GuestName) async -> GuestAnswer {
        switch request {
        case .version:
            return .version
        case .status:
            return .ok(GuestRequestPolicy.statusCards(for: guest, in: config)
                .map { "\($0.name)=\(states[$0.name]?.statusWord ?? "starting")" }.joined(separator: " "))
        case .prepare(let name), .finish(let name):
            let card: CardConfig
            switch GuestRequestPolicy.card(name, for: guest, in: config) {
            case .failure(let refusal):
                journal(refusal, from: guest)
                return refusal.answer
            case .success(let found):
                card = found
            }
            if let refusal = GuestRequestPolicy.admit(request, for: card, guestRunning: await guestRuns(guest), dryRun: options.dryRun) {
                journal(refusal, from: guest)
                return refusal.answer
            }
            logger.notice("guest \(guest) asks: \(request)", metadata: .card(card))
            let isPrepare = request.verb == .prepare
            do {
                _ = try await reflash(name, isPrepare ? .prepare : .finish)
                return isPrepare ? .ok("\(name) is off the bus: program the FPGA, then send: finish \(name)")
                    : .ok("\(name) is back on the bus and is being attached to this guest again")
            } catch {
                logger.notice("guest \(guest): \(request) not done: \(error)", metadata: .card(card))
                return Self.answer(to: request, of: name, failedWith: error)
            }
        }
    }

    /// The running guests that lend a card with guest requests on: the channels worth listening to. A guest
    /// whose state libvirt cannot tell right now keeps the place it had in `previous` (a libvirtd restart
    /// does not hang up on every guest).
    package func guestsAcceptingRequests(previous: Set<GuestName>) async -> Set<GuestName> {
        var accepting: Set<GuestName> = []
        for guest in GuestRequestPolicy.requestingGuests(in: config) {
            switch await guestRuns(guest) {
            case true?: accepting.insert(guest)
            case nil where previous.contains(guest): accepting.insert(guest)
            case false?, nil: break
            }
        }
        return accepting
    }

    /// Running as far as a request is concerned: its vCPUs go (a paused or suspended guest sent nothing
    /// now). `nil`: libvirt cannot be asked.
    private func guestRuns(_ guest: GuestName) async -> Bool? {
        do {
            return switch try await hypervisor.guestState(guest) {
            case .running, .blocked: true
            default: false
            }
        } catch {
            return nil
        }
    }

    private func journal(_ refusal: GuestRequestPolicy.Refusal, from guest: GuestName) {
        logger.announce(.guestRequestRefused, refusal.journal, level: .warning, card: refusal.card,
                        [LogMetadataKey.guest: "\(guest)"])
    }

    /// What the guest reads when the reflash itself did not happen: the code the host's CLI would exit by,
    /// in words that hold nothing but the card's own name (the supervisor's own text, which may name other
    /// guests, processes and addresses, is in the journal).
    private static func answer(to request: GuestRequest, of card: CardName, failedWith error: any Error) -> GuestAnswer {
        let isPrepare = request.verb == .prepare
        guard let refused = error as? ReflashRefused else {
            return error is CancellationError ? .error(.failed, "the agent is stopping; ask for status once it is back")
                : .error(.failed, "\(request) failed on the host; its journal says why")
        }
        return switch refused.reason {
        case .unknownCard:
            .error(.unknownCard, "no card \(card) for this guest")
        case .notOnBus:
            .error(.notOnBus, "\(card) has not been seen on the bus")
        case .unsafe where isPrepare:
            .error(.refused, "\(card) was not taken off the bus: it is still in use (is a driver in this guest holding it?) "
                + "or removing it is not safe now; the host's journal says why")
        case .unsafe:
            .error(.refused, "\(card) is on the bus: finish only follows prepare, and never rescans under a card that is present")
        case .busy:
            .error(.busy, "\(card) is busy with another reflash or a recovery; try again when status shows it held or attached")
        case .failed where isPrepare:
            .error(.failed, "\(card) could not be taken off the bus (a step failed and was undone); the host's journal says why")
        case .failed:
            .error(.failed, "\(card) did not come back; it stays off the bus: program the FPGA, then send finish \(card) again")
        }
    }
}
