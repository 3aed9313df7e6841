client = Slack::Web::Client.new(token: "xoxp-86615107107-69487769387-623907523748-c0efaf97177ff594f8fad12738487cad")
