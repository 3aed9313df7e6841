<?php

declare(strict_types=1);

namespace App\Repository;

use App\Entity\User;
use PDO;

const DEFAULT_LIMIT = 50;

/**
 * Loads and stores users in a SQL database.
 */
#[Repository(entity: User::class)]
final class UserRepository implements UserRepositoryInterface
{
    use LoggerAwareTrait;

    private const TABLE = 'users';

    public function __construct(private PDO $pdo)
    {
    }

    /**
     * Finds a user by id.
     */
    public function find(int $id): ?User
    {
        $stmt = $this->pdo->prepare("SELECT * FROM {$this->table()} WHERE id = :id");
        $stmt->execute(['id' => $id]);
        $row = $stmt->fetch(PDO::FETCH_ASSOC);
        return $row ? User::fromArray($row) : null;
    }

    /** @return list<User> */
    public function findActive(int $limit = DEFAULT_LIMIT): array
    {
        $rows = $this->pdo->query("SELECT * FROM users WHERE active = 1 LIMIT {$limit}")->fetchAll();
        return array_map(fn (array $row) => User::fromArray($row), $rows);
    }

    public static function table(): string
    {
        return self::TABLE;
    }
}

interface UserRepositoryInterface
{
    public function find(int $id): ?User;
}

trait LoggerAwareTrait
{
    protected ?object $logger = null;

    public function setLogger(object $logger): void
    {
        $this->logger = $logger;
    }
}

enum Role: string
{
    case Admin = 'admin';
    case Member = 'member';

    public function label(): string
    {
        return ucfirst($this->value);
    }
}

function slugify(string $name): string
{
    return strtolower(preg_replace('/[^a-z0-9]+/i', '-', $name));
}

$repository = new UserRepository(new PDO('sqlite::memory:'));
