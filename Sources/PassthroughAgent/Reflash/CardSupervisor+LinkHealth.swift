import Logging
import PassthroughCore
import PassthroughSysfs
import PassthroughSystemd

/// The link check after every (re)appearance of a card: a reflash whose PCIe core trains fewer lanes or a
/// lower generation, a marginal slot, or a card that trained but does not answer, is worth a warning.
extension CardSupervisor {
    /// Once per appearance: the link of the card's first function against the one it had when last healthy,
    /// and against what both ends can do. Worse is a warning; as good becomes the new "before".
    func checkLink(of card: CardConfig, _ observed: ObservedCard) {
        guard states[card.name]?.linkCheckDue == true, let first = observed.resolution.functions.first else { return }
        states[card.name]?.linkCheckDue = false
        let (now, capable) = host.reader.trainedLink(of: first.address, below: first.upstreamPort)
        let answers = !LinkProbe(layout: host.sysfs, io: host.io).probe(first.address).isAllOnes
        let before = states[card.name]?.facts.healthyLink
        let verdict = LinkHealth.judge(now: now, before: before, capable: capable, answers: answers)
        states[card.name]?.link = verdict
        states[card.name]?.trainedLink = now
        switch verdict {
        case .healthy(let link):
            if link != before {
                states[card.name]?.facts.healthyLink = link
                saveFacts(of: card.name)
            }
        case .degraded(let why):
            logger.announce(.linkDegraded, "\(card.name): its link came back degraded: \(why)", level: .warning, card: card.name,
                            Logger.Metadata.card(card).merging([LogMetadataKey.pciSlot: "\(first.address)"]) { $1 })
        case .unknown:
            break
        }
    }
}

extension LinkProbeResult {
    /// All-ones from a function still in sysfs: the link trained, but nothing answers behind it.
    var isAllOnes: Bool {
        if case .lost(.allOnes) = self { return true }
        return false
    }
}
