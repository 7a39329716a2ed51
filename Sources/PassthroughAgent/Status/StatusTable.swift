/// `status` for people: one row per function, peers and problems underneath.
public enum StatusTable {
    public static func render(_ cards: [CardStatus]) -> String {
        guard !cards.isEmpty else { return "no cards configured\n" }
        var rows: [[String]] = [["CARD", "ADDRESS", "PRESENT", "ID", "DRIVER", "IOMMU", "GUEST", "LINK"]]
        var notes: [Int: [String]] = [:]
        for card in cards {
            if card.functions.isEmpty {
                rows.append([card.name, card.address ?? "-", "no", "-", "-", "-", card.guest, "-"])
            }
            for (index, function) in card.functions.enumerated() {
                rows.append([
                    index == 0 ? card.name : "",
                    function.address,
                    index == 0 ? "yes" : "",
                    function.id,
                    function.driverUnreadable != nil ? "(unreadable)" : function.driver ?? "(none)",
                    function.iommuGroup.map(String.init) ?? "-",
                    index == 0 ? card.guest : "",
                    index == 0 ? card.link ?? "-" : "",
                ])
            }
            var cardNotes: [String] = []
            if !card.groupPeers.isEmpty {
                cardNotes.append("group peers: " + card.groupPeers.map { "\($0.address) (\($0.driverUnreadable != nil ? "unreadable driver" : $0.driver ?? "no driver"))" }.joined(separator: ", "))
            }
            if let problem = card.problem { cardNotes.append("problem: \(problem)") }
            if let daemon = card.daemon { cardNotes.append("daemon: \(daemon)") }
            if !cardNotes.isEmpty { notes[rows.count - 1] = cardNotes }
        }
        let widths = rows[0].indices.map { column in rows.map { $0[column].count }.max() ?? 0 }
        var output = ""
        for (index, row) in rows.enumerated() {
            let line = row.enumerated().map { column, cell in
                column == row.count - 1 ? cell : cell.padding(widths[column])
            }.joined(separator: "  ")
            output += line.trimmingTrailingSpaces() + "\n"
            for note in notes[index] ?? [] {
                output += String(repeating: " ", count: widths[0] + 2) + note + "\n"
            }
        }
        return output
    }
}

extension String {
    func padding(_ width: Int) -> String {
        count >= width ? self : self + String(repeating: " ", count: width - count)
    }

    func trimmingTrailingSpaces() -> String {
        var text = Substring(self)
        while text.last == " " { text = text.dropLast() }
        return String(text)
    }
}
