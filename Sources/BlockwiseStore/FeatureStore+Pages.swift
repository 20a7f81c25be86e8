import BlockwiseTraining
import Foundation

/// Pages of the end-to-end paging techniques (`--page`): one row per tensor, overwritten each
/// step. The table is created on first use; stores without paging never have it. Pages move by
/// incremental blob I/O, so SQLite's memory stays within its page cache whatever a page's size.
extension FeatureStore: TensorPager {
    func ensurePagesTable() throws {
        guard !pagesReady else { return }
        try database.execute("CREATE TABLE IF NOT EXISTS pages (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE, data BLOB NOT NULL)")
        pagesReady = true
    }

    /// Writes `count` floats as page `name` (one storage operation, in one transaction).
    public func writePage(_ name: String, from values: UnsafePointer<Float>, count: Int) throws {
        try ensurePagesTable()
        try database.transaction {
            let upsert = try database.prepare("""
                INSERT INTO pages (name, data) VALUES (?1, zeroblob(?2)) ON CONFLICT (name) DO UPDATE SET data = zeroblob(?2) RETURNING id
                """)
            try upsert.bind([name, count * 4])
            guard try upsert.step() else { throw StoreError.damaged(path: path, what: "page \(name) could not be written") }
            let id = Int64(upsert.int(0))
            upsert.reset()
            try database.blobIO(table: "pages", column: "data", rowid: id, write: true, UnsafeMutableRawPointer(mutating: values), count: count * 4)
        }
        bytesWritten += count * 4
        operations += 1
        try accountEngineMemory()
    }

    /// Reads page `name` into `count` floats (one storage operation); a missing page, or one of
    /// another size, is damage.
    public func readPage(_ name: String, into values: UnsafeMutablePointer<Float>, count: Int) throws {
        try ensurePagesTable()
        let select = try database.prepare("SELECT id, length(data) FROM pages WHERE name = ?")
        try select.bind([name])
        guard try select.step() else { throw StoreError.damaged(path: path, what: "page \(name) is missing") }
        let id = Int64(select.int(0)), bytes = select.int(1)
        select.reset()
        guard bytes == count * 4 else { throw StoreError.damaged(path: path, what: "page \(name) has \(bytes) bytes, \(count * 4) expected") }
        try database.blobIO(table: "pages", column: "data", rowid: id, write: false, UnsafeMutableRawPointer(values), count: count * 4)
        bytesRead += count * 4
        operations += 1
    }
}
