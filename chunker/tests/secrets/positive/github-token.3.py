headers = {"Authorization": "token gho_0YAx8r6xgguroSu48qXXEEvahfzakoC7FRI3"}
