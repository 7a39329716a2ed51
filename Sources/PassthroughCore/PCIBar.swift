/// One Base Address Register of a function: how much address space it asks for, of which kind, and
/// whether the kernel found room for it below the card's upstream port.
///
/// A BAR the kernel could not place is still sized (the device says how much it wants) but has no
/// address: vfio-pci binds such a function all the same, and QEMU then fails or the guest reads garbage.
public struct PCIBar: Hashable, Sendable, CustomStringConvertible {
    /// Which of a bridge's windows the BAR has to fit in.
    public enum Space: Hashable, Sendable, CustomStringConvertible {
        case io, memory, prefetchableMemory

        public var description: String {
            switch self {
            case .io: "I/O"
            case .memory: "memory"
            case .prefetchableMemory: "prefetchable memory"
            }
        }
    }

    public var function: PCIAddress
    /// 0–5, as `lspci` and the kernel's log number them.
    public var index: Int
    public var size: UInt64
    public var space: Space
    public var is64Bit: Bool
    public var isAssigned: Bool

    public init(function: PCIAddress, index: Int, size: UInt64, space: Space, is64Bit: Bool = false, isAssigned: Bool) {
        self.function = function
        self.index = index
        self.size = size
        self.space = space
        self.is64Bit = is64Bit
        self.isAssigned = isAssigned
    }

    /// `BAR 2 unassigned (256M)`, or with the function when the card has several: what `status` shows.
    public var description: String {
        "BAR \(index) \(isAssigned ? "assigned" : "unassigned") (\(Self.sizeText(size)))"
    }

    /// The size as the kernel's command line writes it (`memparse`): `256M`, `1G`, `4K`, or bytes.
    public static func sizeText(_ bytes: UInt64) -> String {
        for (shift, suffix) in [(40, "T"), (30, "G"), (20, "M"), (10, "K")] where bytes >= 1 << shift && bytes % (1 << shift) == 0 {
            return "\(bytes >> shift)\(suffix)"
        }
        return "\(bytes)"
    }

    /// The smallest power of two at least `bytes`: bridge windows and BARs come in those.
    public static func roundedUpToPowerOfTwo(_ bytes: UInt64) -> UInt64 {
        guard bytes > 1 else { return 1 }
        let shift = UInt64.bitWidth - (bytes - 1).leadingZeroBitCount
        return shift >= UInt64.bitWidth ? UInt64.max : 1 << shift
    }
}

/// What the BARs of one card say, and what a person can do when some do not fit.
public struct CardBARs: Hashable, Sendable {
    public var all: [PCIBar]

    public init(_ all: [PCIBar]) {
        self.all = all.sorted { ($0.function, $0.index) < ($1.function, $1.index) }
    }

    public var unassigned: [PCIBar] { all.filter { !$0.isAssigned } }

    /// Names this set of unassigned BARs, sizes included: a re-assignment is tried once per layout, so
    /// the same bitstream coming back with the same BARs unplaced is not tried again and again, while a
    /// different one is.
    public var unassignedLayout: String {
        unassigned.map { "\($0.function)/\($0.index)=\($0.size)" }.joined(separator: ",")
    }

    /// `BAR 2 unassigned (256M)`, naming functions only when the card has more than one with a problem.
    public var summary: String {
        let functions = Set(unassigned.map(\.function))
        return unassigned.map { functions.count > 1 ? "\($0.function) \($0)" : "\($0)" }.joined(separator: ", ")
    }

    /// The kernel options that make room, sized from what the card needs below its port: every BAR of the
    /// window's kind, placed or not (the window holds them all), rounded up to a power of two.
    public var fix: String {
        var options = ["`pci=realloc`"]
        let spaces: [(PCIBar.Space, String)] = [(.prefetchableMemory, "hpmmioprefsize"), (.memory, "hpmmiosize"), (.io, "hpiosize")]
        for (space, option) in spaces where unassigned.contains(where: { $0.space == space }) {
            let total = all.filter { $0.space == space }.reduce(UInt64(0)) { $0 &+ $1.size }
            options.append("`pci=\(option)=\(PCIBar.sizeText(PCIBar.roundedUpToPowerOfTwo(total)))`")
        }
        var text = "add \(options.joined(separator: " or ")) to the kernel command line and reboot "
            + "(the hp* sizes reserve room below hot-plug ports)"
        if unassigned.contains(where: { $0.space == .prefetchableMemory && $0.is64Bit }) {
            text += "; for a 64-bit prefetchable BAR, also enable \"Above 4G decoding\" in the firmware setup"
        }
        return text
    }
}

/// What was done about a card whose BARs did not fit, remembered (and persisted) so that it is done once:
/// a restart or a second event for the same card finds it here and does not try again.
public struct BARReassignment: Hashable, Sendable {
    public enum Outcome: String, Hashable, Sendable {
        /// The card and its port were removed and the port's parent rescanned.
        case reenumerated = "re-enumerated"
        /// It was not tried: the safety rules said no (someone else below the port, a guest holds it, …).
        case refused
    }

    /// ``CardBARs/unassignedLayout`` when it was tried.
    public var layout: String
    public var outcome: Outcome
    /// Why it was refused, in words for the notification and `status`.
    public var detail: String?
    /// Whether the person was told (the notification goes out once per layout).
    public var notified: Bool

    public init(layout: String, outcome: Outcome, detail: String? = nil, notified: Bool = false) {
        self.layout = layout
        self.outcome = outcome
        self.detail = detail
        self.notified = notified
    }
}
