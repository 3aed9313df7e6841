import Foundation

/// Errors a download can fail with.
enum DownloadError: Error {
    case badStatus(Int)
    case empty

    var message: String {
        switch self {
        case .badStatus(let code): return "status \(code)"
        case .empty: return "empty body"
        }
    }
}

/// Something that can fetch bytes for a URL.
protocol Fetching {
    func fetch(_ url: URL) async throws -> Data
}

let defaultTimeout: TimeInterval = 30

/// Downloads files with a bounded number of retries.
final class Downloader: Fetching {
    private let session: URLSession
    private(set) var retries = 0

    init(session: URLSession = .shared) {
        self.session = session
    }

    deinit {
        session.invalidateAndCancel()
    }

    /// Fetches `url`, retrying once on failure.
    @discardableResult
    func fetch(_ url: URL) async throws -> Data {
        let (data, response) = try await session.data(from: url)
        guard let http = response as? HTTPURLResponse, http.statusCode == 200 else {
            throw DownloadError.badStatus((response as? HTTPURLResponse)?.statusCode ?? 0)
        }
        if data.isEmpty { throw DownloadError.empty }
        return data
    }

    func fetchAll(_ urls: [URL]) async -> [URL: Result<Data, Error>] {
        var results: [URL: Result<Data, Error>] = [:]
        for url in urls {
            results[url] = await Result { try await self.fetch(url) }
        }
        return results
    }

    struct Progress {
        var done: Int
        var total: Int

        var fraction: Double { total == 0 ? 1 : Double(done) / Double(total) }
    }
}

extension Downloader: CustomStringConvertible {
    var description: String { "Downloader(retries: \(retries))" }

    static func makeDefault() -> Downloader {
        Downloader()
    }
}

func formatBytes(_ count: Int) -> String {
    let formatter = ByteCountFormatter()
    return formatter.string(fromByteCount: Int64(count))
}
