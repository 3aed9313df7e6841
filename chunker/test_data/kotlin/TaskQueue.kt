package com.example.tasks

import kotlinx.coroutines.channels.Channel
import kotlinx.coroutines.launch

const val MAX_RETRIES = 3

/**
 * A task with a name and a body to run.
 */
data class Task(val name: String, val body: suspend () -> Unit)

/** Runs tasks one at a time, retrying failures. */
class TaskQueue(private val scope: CoroutineScope) {
    private val channel = Channel<Task>(Channel.UNLIMITED)

    val pending: Int
        get() = queued.size

    private val queued = mutableListOf<String>()

    init {
        scope.launch { drain() }
    }

    /** Queues a task. */
    fun submit(task: Task) {
        queued += task.name
        channel.trySend(task)
    }

    @Throws(IllegalStateException::class)
    suspend fun drain() {
        for (task in channel) {
            var attempt = 0
            while (attempt < MAX_RETRIES) {
                val ok = runCatching { task.body() }.isSuccess
                if (ok) break
                attempt++
            }
            queued -= task.name
        }
    }

    override fun toString(): String = "TaskQueue(pending=$pending, names=${queued.joinToString { "{$it}" }})"

    companion object {
        fun named(scope: CoroutineScope, vararg names: String): TaskQueue =
            TaskQueue(scope).also { q -> names.forEach { q.submit(Task(it) {}) } }
    }
}

interface Listener {
    fun onDone(task: Task)
}

enum class Priority(val weight: Int) {
    LOW(1),
    HIGH(10);

    fun isUrgent() = weight > 5
}

object Defaults {
    val priority = Priority.LOW
}

typealias TaskFactory = (String) -> Task

fun String.toTask(): Task = Task(this) { println("running $this") }
