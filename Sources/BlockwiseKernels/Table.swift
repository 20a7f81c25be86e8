import Foundation

/// `text` padded with spaces to `width` characters, or followed by one space when it is as long
/// or longer: a column of a printed table.
public func pad(_ text: String, _ width: Int) -> String {
    text.count >= width ? text + " " : text + String(repeating: " ", count: width - text.count)
}

/// A table as the commands print it: padded columns for a person, or CSV for a script.
///
/// Each cell has the text a person reads ("2.57 MiB") and the value a script reads (2694144);
/// CSV carries the values, with the header naming units where there are any (`peak_bytes`).
public struct Table: Sendable {
    public struct Column: Sendable {
        /// The header as printed, its width in the padded text, and the CSV header.
        public var title: String
        public var width: Int
        public var csvName: String
        /// Whether the padded text shows the column (CSV always has it, so that its header does
        /// not change with the options: a column without values is empty there).
        public var inText: Bool
        public init(_ title: String, width: Int, csv: String, inText: Bool = true) {
            self.title = title; self.width = width; self.csvName = csv; self.inText = inText
        }
    }
    public struct Cell: Sendable {
        public var text: String
        public var value: String
        public init(_ text: String, value: String? = nil) { self.text = text; self.value = value ?? text }
        /// A byte count: "2.57 MiB" printed, the exact count in CSV.
        public static func bytes(_ count: Int) -> Cell { Cell(formatBytes(count), value: String(count)) }
        public static func int(_ value: Int) -> Cell { Cell(String(value)) }
    }

    public var columns: [Column]
    public var rows: [[Cell]] = []
    public init(_ columns: [Column]) { self.columns = columns }

    public mutating func append(_ row: [Cell]) {
        precondition(row.count == columns.count, "a row of \(row.count) cells in a table of \(columns.count) columns")
        rows.append(row)
    }

    /// Padded columns (the last one unpadded), the header first.
    public var text: String {
        let shown = columns.indices.filter { columns[$0].inText }
        func line(_ cells: [String]) -> String {
            shown.enumerated().map { position, index in
                position == shown.count - 1 ? cells[index] : pad(cells[index], columns[index].width)
            }.joined()
        }
        return ([line(columns.map(\.title))] + rows.map { line($0.map(\.text)) }).joined(separator: "\n")
    }

    /// RFC 4180 CSV: a header of the columns' CSV names, then the values; fields with a comma,
    /// a quote or a line break are quoted. Lines end in CRLF as the RFC says.
    public var csv: String {
        func field(_ text: String) -> String {
            guard text.contains(where: { $0 == "," || $0 == "\"" || $0 == "\n" || $0 == "\r" }) else { return text }
            return "\"" + text.replacingOccurrences(of: "\"", with: "\"\"") + "\""
        }
        let lines = [columns.map { field($0.csvName) }] + rows.map { $0.map { field($0.value) } }
        return lines.map { $0.joined(separator: ",") + "\r\n" }.joined()
    }
}
