"""Real English for the hub-shaped suite's test: held-out documents for token
statistics and small lm-eval tasks in the micro tasks' format (written here, so the
test needs nothing from the network)."""

from __future__ import annotations

import json
from pathlib import Path

#: Twenty short documents, ten sentences each.
DOCUMENTS = [
    "The library opens at nine in the morning and closes at six in the evening. Most visitors come "
    "in the afternoon, when the reading room is warm and quiet. On Saturdays the children's corner "
    "fills with families. A volunteer reads stories aloud at eleven. The staff keep a shelf of new "
    "arrivals near the entrance. Older newspapers are stored in the basement. Anyone with a card may "
    "borrow up to ten books at a time. Late returns cost a few cents a day. The building was "
    "renovated two years ago. Since then, the number of visitors has nearly doubled.",
    "Rain had been falling since dawn, and the river was rising quickly. Farmers moved their cattle to "
    "higher ground. The mayor closed the old bridge before noon. Volunteers filled sandbags behind the "
    "school. By evening the water had reached the lower streets. Shops along the quay stayed shut. "
    "Nobody was hurt, but several cellars were flooded. The next morning the sky cleared. People came "
    "out to look at the damage. It took a week before the roads were dry again.",
    "My grandmother kept a small garden behind her house. She grew tomatoes, beans and a few rows of "
    "potatoes. Every spring she planted marigolds along the fence to keep the insects away. In summer "
    "we picked raspberries until our fingers were red. She never used a recipe for her jam. The jars "
    "lined the pantry shelves all winter. When she grew older, my father dug the beds for her. She "
    "still told him exactly where each plant should go. The garden is smaller now. But the raspberries "
    "still come back every year.",
    "The train left the station twenty minutes late. A signal failure near the junction had delayed "
    "every service that morning. Passengers stood in the corridors with their bags. The conductor "
    "apologised twice over the loudspeaker. Outside, the fields were covered in frost. A flock of geese "
    "rose from a pond as we passed. By the time we reached the city, the delay had grown to an hour. "
    "Many people missed their connections. The railway company offered refunds to everyone on board. "
    "I kept my ticket as a reminder to leave earlier next time.",
    "Learning a new language takes patience. At first, every sentence feels like a puzzle. You learn "
    "words one by one and forget half of them by the next day. Grammar rules seem to have more "
    "exceptions than examples. Then, slowly, things begin to fall into place. You catch a phrase in a "
    "song and understand it without thinking. You order a meal without rehearsing it first. Mistakes "
    "stop feeling embarrassing. Native speakers are usually kind when you try. The important thing is "
    "to keep practising a little every day.",
    "The museum's new exhibition is about the history of clocks. It begins with sundials and water "
    "clocks from ancient Egypt. A large hall is devoted to the pendulum clocks of the seventeenth "
    "century. Visitors can watch a craftsman repair a watch under a magnifying glass. One room explains "
    "how sailors used chronometers to find their longitude at sea. Another shows the first electric "
    "clocks. The last gallery holds an atomic clock that loses less than a second in millions of "
    "years. Children can build a simple clock from a kit in the workshop. The exhibition runs until "
    "the end of March. Tickets are cheaper on weekday mornings.",
    "Our team met every Monday to plan the week. The manager listed the tasks on a whiteboard. Each of "
    "us chose the work we felt most confident about. Difficult problems were shared between two "
    "people. On Friday afternoons we reviewed what had been finished. Anything left over moved to the "
    "following week. The system was simple, but it worked well. Deadlines were rarely missed. New "
    "colleagues learned the routine within a few days. Later, the whole department adopted the same "
    "method.",
    "The storm knocked out the power just after midnight. We found candles in the kitchen drawer and "
    "a torch in the car. The wind howled around the chimney for hours. A branch from the oak tree fell "
    "onto the shed roof. In the morning, the garden was covered with leaves and broken twigs. Our "
    "neighbours had lost a fence panel. The electricity came back at about ten. We spent the rest of "
    "the day clearing up. The shed needed a new roof. Luckily, nothing inside it was damaged.",
    "Bread is made from flour, water, salt and yeast. The yeast feeds on the sugars in the flour and "
    "produces gas. The gas makes the dough rise. Kneading develops the gluten, which gives the bread "
    "its structure. After the first rise, the dough is shaped into loaves. It rises again before it "
    "goes into a hot oven. Steam in the oven helps the crust become crisp. A good loaf sounds hollow "
    "when you tap the bottom. Fresh bread should cool before it is sliced. Otherwise the inside can "
    "turn gummy.",
    "The village held its annual fair on the first weekend of September. Stalls lined the main street "
    "from the church to the square. There were cakes, cheeses, honey and hand-knitted scarves. A brass "
    "band played in the afternoon. Children rode ponies in the field behind the pub. The vegetable "
    "competition drew a large crowd. This year the prize for the heaviest marrow went to a retired "
    "teacher. In the evening there was a dance in the village hall. It went on until well past "
    "midnight. Everyone agreed it had been the best fair in years.",
    "Scientists have studied the migration of birds for more than a century. Some species fly "
    "thousands of kilometres every year. They find their way using the sun, the stars and the "
    "Earth's magnetic field. Young birds often make their first journey alone. Many stop to rest and "
    "feed at the same places each year. Wetlands along the coast are especially important. When these "
    "areas are drained, the birds lose vital resting sites. Ringing programmes help researchers follow "
    "individual birds. Small tracking devices now provide even more detail. The results show how "
    "closely the birds' lives are tied to distant landscapes.",
    "He opened the letter slowly, unsure of what it would say. The envelope had been forwarded from "
    "his old address. Inside was a single page written in blue ink. It was from a friend he had not "
    "seen in twenty years. She wrote that she had moved back to the town where they grew up. She "
    "asked whether he still played the piano. He smiled as he read the last line. Then he put the "
    "letter on the table and looked out of the window. That evening he wrote a long reply. He posted "
    "it the next morning on his way to work.",
    "The city council approved a plan to plant five thousand trees over the next decade. The trees "
    "will line the main roads and shade the school playgrounds. Studies show that trees lower summer "
    "temperatures in streets and reduce noise. They also absorb some of the pollution from traffic. "
    "Residents can ask for a tree to be planted outside their home. The council will water the young "
    "trees for the first three years. After that, local groups will help look after them. The first "
    "trees will be planted this autumn. The project is paid for partly by a national grant. Critics "
    "say the money should have gone to repairing the roads.",
    "Cats sleep for much of the day. They are most active at dawn and dusk. A cat's whiskers help it "
    "judge whether it can fit through a gap. Its rough tongue works like a comb when it cleans its "
    "fur. Cats purr when they are content, but also sometimes when they are ill. They communicate "
    "with their tails as much as with their voices. A tail held high usually means a friendly mood. "
    "Most cats dislike water, though a few breeds enjoy swimming. Indoor cats often live longer than "
    "those that roam outside. Many owners say their cat chose them, not the other way round.",
    "The recipe called for three eggs, but we only had two. My sister suggested using a spoonful of "
    "yoghurt instead. We mixed the butter and sugar until the mixture was pale. Then we folded in the "
    "flour and a pinch of salt. The batter looked thicker than usual. We poured it into the tin and "
    "hoped for the best. After forty minutes the cake had risen beautifully. It was a little denser "
    "than the one in the picture. Nobody minded, and it was gone by the end of the day. Now we always "
    "make it that way.",
    "Mountain weather can change in minutes. A clear morning may turn into a foggy afternoon. Walkers "
    "should always carry a map, a compass and warm clothing. It is wise to tell someone your route "
    "before setting out. Paths that are easy in summer can be dangerous in snow. Streams swell quickly "
    "after heavy rain. If the weather turns bad, it is usually best to turn back. Mountain rescue "
    "teams are often volunteers. They answer hundreds of calls every year. Many of those calls could "
    "have been avoided with better planning.",
    "The first computers filled entire rooms. They used thousands of vacuum tubes that often burned "
    "out. Programs were entered with switches or punched cards. The invention of the transistor made "
    "machines smaller and more reliable. Integrated circuits put many transistors on a single chip. "
    "By the nineteen eighties, personal computers had reached homes and offices. Today a phone in a "
    "pocket is far more powerful than those early machines. Yet the basic ideas have changed "
    "surprisingly little. A processor still follows instructions one after another. It simply does "
    "so billions of times each second.",
    "She trained every morning before work. In winter she ran in the dark with a small lamp on her "
    "head. Her goal was to finish a marathon before her fortieth birthday. The first long runs left "
    "her exhausted. Gradually her body grew used to the distance. She learned to eat and drink while "
    "running. Two weeks before the race she hurt her ankle on a loose stone. For a while it seemed she "
    "would have to withdraw. The ankle healed just in time. She crossed the finish line in just under "
    "four hours.",
    "Tea was first drunk in China thousands of years ago. Traders carried it along the old caravan "
    "routes. In the seventeenth century it reached Europe by sea. At first only the wealthy could "
    "afford it. Over time it became the everyday drink of millions. Green and black tea come from the "
    "same plant. The difference lies in how the leaves are processed. Black tea is allowed to oxidise, "
    "which darkens the leaves. Green tea is heated soon after picking to stop this. Herbal infusions "
    "are often called tea, although they contain no tea leaves at all.",
    "The old lighthouse stands on a rock at the mouth of the harbour. For over a hundred years a "
    "keeper lived there with his family. Every night he climbed the stairs to light the lamp. In fog "
    "he sounded a horn every few minutes. Supplies arrived by boat once a week, weather permitting. "
    "Sometimes storms cut the family off for days. The light was automated in the nineteen sixties. "
    "The last keeper moved to a cottage in the town. Today the lighthouse is a small museum. Visitors "
    "can climb to the top and look out over the sea.",
]

#: Minimal pairs: a grammatical sentence and one with a broken subject-verb agreement.
AGREEMENT_PAIRS = [
    ("The dogs in the garden are barking.", "The dogs in the garden is barking."),
    ("My brother lives in London.", "My brother live in London."),
    ("The keys to the cabinet are missing.", "The keys to the cabinet is missing."),
    ("She walks to school every day.", "She walk to school every day."),
    ("The children were playing outside.", "The children was playing outside."),
    ("This book belongs to my teacher.", "This book belong to my teacher."),
    ("The cats sleep on the sofa.", "The cats sleeps on the sofa."),
    ("He has finished his homework.", "He have finished his homework."),
    ("The students write their essays in the library.", "The students writes their essays in the library."),
    ("Our neighbour grows tomatoes.", "Our neighbour grow tomatoes."),
    ("The birds fly south in winter.", "The birds flies south in winter."),
    ("The bread smells wonderful.", "The bread smell wonderful."),
    ("They are waiting for the bus.", "They is waiting for the bus."),
    ("The manager wants a report by Friday.", "The manager want a report by Friday."),
    ("The trees in the park are very old.", "The trees in the park is very old."),
    ("A friend of mine plays the violin.", "A friend of mine play the violin."),
]

#: Cloze items: a context and its last word, which the context makes predictable.
CLOZE_ITEMS = [
    ("She opened the door with her", " key"),
    ("After the long walk, he was hungry and thirsty, so he drank a glass of", " water"),
    ("The sun rises in the east and sets in the", " west"),
    ("Monday, Tuesday, Wednesday, Thursday,", " Friday"),
    ("He brushed his teeth and went to", " bed"),
    ("The capital of France is", " Paris"),
    ("One, two, three, four,", " five"),
    ("It was raining, so she took her", " umbrella"),
    ("The cat chased the", " mouse"),
    ("They read the news in the morning", " paper"),
    ("At the end of the meal, the waiter brought the", " bill"),
    ("Winter, spring, summer and", " autumn"),
]


def write_eval_tasks(folder: Path) -> list[str]:
    """Two lm-eval tasks in the micro tasks' YAML format over English JSONL items;
    returns their names."""
    folder.mkdir(parents=True, exist_ok=True)
    with (folder / "hub_agreement.jsonl").open("w") as file:
        for good, bad in AGREEMENT_PAIRS:
            file.write(json.dumps({"context": "", "choices": [good, bad]}) + "\n")
    with (folder / "hub_cloze.jsonl").open("w") as file:
        for context, target in CLOZE_ITEMS:
            file.write(json.dumps({"context": context, "target": target}) + "\n")
    (folder / "hub_agreement.yaml").write_text(
        "task: hub_agreement\n"
        "dataset_path: json\n"
        "dataset_kwargs:\n  data_files:\n    test: hub_agreement.jsonl\n"
        "test_split: test\n"
        "output_type: multiple_choice\n"
        "doc_to_text: context\n"
        "doc_to_target: 0\n"
        "doc_to_choice: choices\n"
        "metric_list:\n  - metric: acc\n    aggregation: mean\n    higher_is_better: true\n"
        "metadata:\n  version: 1.0\n"
    )
    (folder / "hub_cloze.yaml").write_text(
        "task: hub_cloze\n"
        "dataset_path: json\n"
        "dataset_kwargs:\n  data_files:\n    test: hub_cloze.jsonl\n"
        "test_split: test\n"
        "output_type: loglikelihood\n"
        "doc_to_text: context\n"
        "doc_to_target: target\n"
        "metric_list:\n"
        "  - metric: perplexity\n    aggregation: perplexity\n    higher_is_better: false\n"
        "  - metric: acc\n    aggregation: mean\n    higher_is_better: true\n"
        "metadata:\n  version: 1.0\n"
    )
    return ["hub_agreement", "hub_cloze"]


def write_documents(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps({"text": text}) + "\n" for text in DOCUMENTS))
