const octokit = new Octokit({ auth: "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" });
