import PassthroughCore
import PassthroughLibvirt
import PassthroughSysfs

/// `plan`: what a pass would do now, computed exactly as the daemon does, without doing it.
public enum PlanPreview {
    public struct Step: Encodable, Hashable, Sendable {
        public var card: String
        public var action: String
        public var address: String?
        public var guest: String?
        public var policy: String?
        public var reason: String

        init(_ step: PlanStep) {
            card = step.card.rawValue
            action = step.actionName
            reason = step.reason
            switch step.action {
            case .bindVFIO: break
            case .bindHost(let hostPolicy): policy = hostPolicy.description
            case .attach(let target, let owner), .detach(let target, let owner):
                address = target.description
                guest = owner.rawValue
            case .reassignBARs(let port):
                address = port.description
            }
        }
    }

    public struct Result: Sendable {
        public var steps: [Step]
        /// Things that limit the plan (libvirt unreachable, a card absent…), for stderr.
        public var notes: [String]
    }

    public static func compute(config: AgentConfig, host: HostEnvironment, hypervisor: any Hypervisor) async throws(SysfsError) -> Result {
        let devices = try host.reader.allFunctions()
        let observer = CardObserver(reader: host.reader, hypervisor: hypervisor)
        var steps: [Step] = []
        var notes: [String] = []
        for card in config.cards {
            // What the daemon already tried about BARs that did not fit, so the plan does not promise it again.
            let tried = CardFactsStore().load(card.name).barReassignment
            var observation = await observer.observe(card, devices: devices, history: CardHistory(barReassignment: tried))
            // What the kernel flagged unset, read only: sizing a zeroed line writes config space, which `plan` never does.
            observation.observed.bars = CardBARs(observation.observed.resolution.functions.flatMap { (try? host.reader.bars(of: $0.address)) ?? [] })
            if let problem = observation.guestProblem {
                notes.append("\(card.name): state of guest \(card.guest) unknown (\(problem)); the card is left where it is")
            }
            let placement = Placement(card: card, guest: observation.observed.guest)
            if case .heldByCrashedGuest = placement, observation.observed.resolution.isPresent {
                notes.append("\(card.name): \(placement)")
            }
            switch observation.observed.resolution.outcome {
            case .absent: notes.append("\(card.name): not on the PCI bus")
            case .ambiguous(let slots): notes.append("\(card.name): ids match \(slots.count) slots; give it an address")
            case .present:
                if let reason = observation.observed.resolution.handsOff { notes.append("\(card.name): \(reason)") }
            }
            steps += Reconciler.plan(for: observation.observed).map(Step.init)
        }
        return Result(steps: steps, notes: notes)
    }
}
