#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import PassthroughCore
import PassthroughSysfs
import SystemPackage

/// What the agent learnt about a card that the bus cannot tell again after a restart: whether BARs that
/// did not fit were already re-enumerated for (so it happens once, not on every start or event), and the
/// link the card had when last healthy (so a worse one after a reflash is noticed across a restart).
///
/// One small `key=value` file per card, `/run/passthrough-agent/facts/<card>` by default, next to the
/// reflash state:
///
///     bar-layout=0000:01:00.0/2=268435456
///     bar-outcome=re-enumerated
///     bar-notified=yes
///     link=8 16
public struct CardFacts: Hashable, Sendable {
    public var barReassignment: BARReassignment?
    public var healthyLink: PCILinkState?

    public init(barReassignment: BARReassignment? = nil, healthyLink: PCILinkState? = nil) {
        self.barReassignment = barReassignment
        self.healthyLink = healthyLink
    }

    var fileContents: String {
        var lines: [String] = []
        if let tried = barReassignment {
            lines += ["bar-layout=\(tried.layout)", "bar-outcome=\(tried.outcome.rawValue)", "bar-notified=\(tried.notified ? "yes" : "no")"]
            // One line: a newline in the reason would start a key of its own.
            if let detail = tried.detail { lines.append("bar-detail=\(detail.split(whereSeparator: \.isNewline).joined(separator: " "))") }
        }
        if let link = healthyLink { lines.append("link=\(link.speed) \(link.width)") }
        return lines.map { $0 + "\n" }.joined()
    }

    /// `nil` for a file this code did not write.
    init?(fileContents: String) {
        var fields: [Substring: Substring] = [:]
        for line in fileContents.split(separator: "\n") {
            let parts = line.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
            guard parts.count == 2, fields.updateValue(parts[1], forKey: parts[0]) == nil else { return nil }
        }
        if let layout = fields["bar-layout"] {
            guard let outcome = fields["bar-outcome"].flatMap({ BARReassignment.Outcome(rawValue: String($0)) }),
                  let notified = fields["bar-notified"], notified == "yes" || notified == "no"
            else { return nil }
            barReassignment = BARReassignment(layout: String(layout), outcome: outcome, detail: fields["bar-detail"].map(String.init),
                                              notified: notified == "yes")
        }
        if let link = fields["link"] {
            let parts = link.split(separator: " ")
            guard parts.count == 2, let speed = Double(parts[0]), let width = Int(parts[1]) else { return nil }
            healthyLink = PCILinkState(speed: speed, width: width)
        }
    }
}

public struct CardFactsStore: Sendable {
    public static let defaultDirectory: FilePath = "/run/passthrough-agent/facts"

    public let directory: FilePath

    public init(directory: FilePath = CardFactsStore.defaultDirectory) {
        self.directory = directory
    }

    /// The facts of `card`; empty when there is no file or it is not one of ours (then it is rewritten
    /// with what this run learns: nothing in it can be unsafe to forget, only repeated).
    public func load(_ card: CardName) -> CardFacts {
        guard let text = try? LinuxSysfsIO().read(directory.appending(card.rawValue)) else { return CardFacts() }
        return CardFacts(fileContents: text) ?? CardFacts()
    }

    /// Replaces the file whole (``StateFile``), or removes it when there is nothing to keep.
    public func save(_ facts: CardFacts, of card: CardName) throws(Errno) {
        let file = directory.appending(card.rawValue)
        do throws(StateFile.Failure) {
            if facts == CardFacts() {
                try StateFile.remove(file)
            } else {
                try StateFile.replace(file, with: facts.fileContents)
            }
        } catch {
            throw error.errno
        }
    }
}
