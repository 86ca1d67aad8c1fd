"""The corpus' word lists: per topic, the subjects, verbs, objects, adjectives, places and
reasons its sentence templates draw from, plus the time phrases, links and opinions any topic
uses (data only; `embedder.tools.corpus` makes the texts)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Topic:
    subjects: tuple[str, ...]  # singular noun phrases
    verbs: tuple[str, ...]  # regular base forms, taking the objects below
    objects: tuple[str, ...]
    adjectives: tuple[str, ...]
    places: tuple[str, ...]
    reasons: tuple[str, ...]


def _w(words: str) -> tuple[str, ...]:
    """'a|b|c' -> ('a', 'b', 'c'): keeps the word lists compact."""
    return tuple(words.split("|"))


TOPICS: dict[str, Topic] = {
    "cooking": Topic(
        _w(
            "the chef|my grandmother|the baker|a home cook|the restaurant owner|"
            "the pastry student|our neighbour|the food critic"
        ),
        _w("prepare|season|roast|bake|slice|simmer|taste|marinate|serve|grill"),
        _w(
            "the tomato sauce|a loaf of sourdough bread|the vegetable soup|a lemon tart|"
            "the chicken thighs|fresh pasta|the garlic butter|a spicy curry|"
            "the mushroom risotto|a chocolate cake"
        ),
        _w("crispy|tender|fragrant|homemade|savory|rich|delicate"),
        _w(
            "in a cast iron pan|in the small kitchen|at the farmers market|over a low flame|"
            "in the wood-fired oven"
        ),
        _w(
            "the guests arrive early|the recipe needs time to rest|"
            "fresh herbs make a difference|the oven heats unevenly"
        ),
    ),
    "travel": Topic(
        _w(
            "the traveller|our tour guide|a young backpacker|the pilot|my cousin|"
            "the hotel manager|a retired couple"
        ),
        _w("book|visit|explore|photograph|cross|reserve|plan|cancel"),
        _w(
            "a night train to Vienna|the old harbour|a cheap flight to Lisbon|"
            "the mountain pass|a room with a sea view|the ancient temple|"
            "a ferry to the islands|the museum of modern art|the hiking trail"
        ),
        _w("crowded|quiet|scenic|expensive|remote|historic|sunny"),
        _w(
            "during the summer holidays|near the central station|across the border|"
            "along the coast|in the old town"
        ),
        _w(
            "the prices rise in August|the weather forecast looks good|"
            "the trains are often delayed|the locals recommended it"
        ),
    ),
    "software": Topic(
        _w(
            "the developer|our backend team|the security engineer|a new intern|"
            "the database administrator|the release manager|the open source maintainer"
        ),
        _w("deploy|refactor|debug|review|test|profile|patch|document|migrate|monitor"),
        _w(
            "the payment service|a memory leak in the parser|the login page|"
            "the database schema|a flaky integration test|the build pipeline|the REST API|"
            "the caching layer|the configuration file"
        ),
        _w("slow|reliable|legacy|concurrent|scalable|broken|stable"),
        _w(
            "on the staging server|in production|before the release|inside the container|"
            "across three data centers"
        ),
        _w(
            "the customers reported errors|latency doubled last week|"
            "the old library is deprecated|the audit found a vulnerability"
        ),
    ),
    "health": Topic(
        _w(
            "the doctor|a nurse|the physiotherapist|my brother|the patient|the nutritionist|"
            "a marathon runner"
        ),
        _w("recommend|monitor|measure|treat|prescribe|examine|track"),
        _w(
            "the blood pressure|a daily walk|the knee injury|a balanced diet|"
            "eight hours of sleep|the vitamin levels|the seasonal flu|a stretching routine|"
            "the heart rate"
        ),
        _w("healthy|chronic|mild|painful|regular|gentle|preventive"),
        _w(
            "at the clinic|after the surgery|during the winter months|at the local gym|"
            "before breakfast"
        ),
        _w(
            "stress affects the immune system|the symptoms came back|"
            "early treatment works better|the test results were unclear"
        ),
    ),
    "finance": Topic(
        _w(
            "the investor|the accountant|a small business owner|the central bank|"
            "my landlord|the analyst|a young family"
        ),
        _w("invest|borrow|save|budget|report|audit|repay|transfer"),
        _w(
            "the monthly rent|a retirement fund|the quarterly earnings|"
            "a mortgage with a fixed rate|the emergency savings|the tax return|"
            "a portfolio of index funds|the interest payments"
        ),
        _w("volatile|profitable|risky|conservative|annual|modest|steady"),
        _w(
            "at the end of the quarter|through an online bank|before the deadline|"
            "in a savings account|on the stock market"
        ),
        _w(
            "inflation keeps rising|interest rates went up|the market fell sharply|"
            "the contract has hidden fees"
        ),
    ),
    "sports": Topic(
        _w(
            "the coach|the goalkeeper|our team captain|a young sprinter|the referee|"
            "the tennis player|the cycling club"
        ),
        _w("train|practice|defend|coach|watch|win|schedule|analyze"),
        _w(
            "the final match|a penalty kick|the morning practice|the relay race|"
            "the league table|a new training plan|the championship title|the opening game"
        ),
        _w("fast|exhausting|dramatic|competitive|young|strong|famous"),
        _w(
            "at the stadium|in heavy rain|on the clay court|after halftime|in front of a loud crowd"
        ),
        _w(
            "the season starts next week|two players are injured|the fans expect a victory|"
            "the rival team looks strong"
        ),
    ),
    "science": Topic(
        _w(
            "the astronomer|a graduate student|the research team|the biologist|"
            "the physicist|the lab technician|a curious child"
        ),
        _w("observe|measure|publish|simulate|sequence|classify|predict"),
        _w(
            "a distant galaxy|the genome of a rare plant|the surface of Mars|"
            "a new species of beetle|the ocean temperature|the solar eclipse|"
            "the behaviour of electrons|a sample of volcanic rock"
        ),
        _w("faint|surprising|microscopic|ancient|precise|noisy|rare"),
        _w(
            "with a radio telescope|in the laboratory|at the research station|"
            "under the microscope|in a computer model"
        ),
        _w(
            "the data contradicts the theory|the instruments were recalibrated|"
            "the grant was approved|the results need replication"
        ),
    ),
    "history": Topic(
        _w(
            "the historian|the archaeologist|an old sailor|the museum curator|"
            "the medieval king|a village priest|the professor"
        ),
        _w("describe|study|restore|discover|translate|preserve|question"),
        _w(
            "the Roman road|a letter from the war|the castle walls|an ancient coin|"
            "the trade routes of the Silk Road|the old manuscript|the first printing press|"
            "the ruins of the city"
        ),
        _w("forgotten|medieval|ancient|famous|damaged|mysterious|royal"),
        _w(
            "in the national archive|near the river delta|during the excavation|"
            "in the seventeenth century|beneath the cathedral"
        ),
        _w(
            "the records were incomplete|the empire was collapsing|"
            "the local legends disagree|a fire destroyed the library"
        ),
    ),
    "gardening": Topic(
        _w("the gardener|my aunt|the farmer|a volunteer|the landscape designer|our neighbour"),
        _w("plant|water|prune|harvest|fertilize|compost|repot"),
        _w(
            "the tomato seedlings|a row of lavender|the apple trees|the herb garden|"
            "a bed of tulips|the climbing roses|the potato crop"
        ),
        _w("green|dry|organic|shady|overgrown|blooming|young"),
        _w(
            "in early spring|behind the house|in the greenhouse|along the fence|"
            "after the first frost"
        ),
        _w(
            "the soil is too acidic|slugs ate the lettuce|the summer was very dry|"
            "bees need more flowers"
        ),
    ),
    "music": Topic(
        _w(
            "the pianist|the conductor|a street musician|the drummer|the songwriter|"
            "our choir|the producer"
        ),
        _w("compose|perform|record|rehearse|arrange|tune|remix"),
        _w(
            "a slow jazz ballad|the violin concerto|the new album|a folk song|"
            "the opening chord|the live concert|the string quartet"
        ),
        _w("loud|melancholic|upbeat|acoustic|classical|catchy|quiet"),
        _w(
            "in the recording studio|at the summer festival|in a small bar|"
            "at the concert hall|on an old piano"
        ),
        _w(
            "the tickets sold out|the singer lost her voice|the audience loved it|"
            "the acoustics were poor"
        ),
    ),
    "weather": Topic(
        _w(
            "the forecaster|a storm chaser|the harbour master|the ski instructor|"
            "the meteorologist|a fisherman|the city council"
        ),
        _w("predict|record|report|track|warn|compare|photograph"),
        _w(
            "the heavy snowfall|a thunderstorm over the valley|the morning fog|"
            "the heat wave|the strong westerly wind|the rainfall totals|"
            "a rare double rainbow|the spring floods"
        ),
        _w("humid|freezing|stormy|mild|unusual|dry|windy"),
        _w(
            "along the northern coast|in the mountains|over the weekend|near the airport|"
            "across the plains"
        ),
        _w(
            "the jet stream shifted south|the sea is warmer than usual|"
            "the satellite data arrived late|the rivers are already full"
        ),
    ),
    "education": Topic(
        _w(
            "the teacher|a first-year student|the school principal|the tutor|the librarian|"
            "my daughter|the exam board"
        ),
        _w("explain|grade|revise|memorize|assign|discuss|correct"),
        _w(
            "the algebra homework|a short essay on poetry|the reading list|the final exam|"
            "the chemistry experiment|a group presentation|the history syllabus|"
            "the spelling test"
        ),
        _w("difficult|boring|creative|optional|graded|confusing|clear"),
        _w(
            "in the classroom|at the public library|during the online lesson|after school|"
            "before the holidays"
        ),
        _w(
            "the deadline was moved|half the class was absent|the instructions were unclear|"
            "the textbook is outdated"
        ),
    ),
    "vehicles": Topic(
        _w(
            "the mechanic|a delivery driver|the bus company|my father|the train conductor|"
            "a cyclist|the car dealer"
        ),
        _w("repair|inspect|park|wash|replace|insure|charge"),
        _w(
            "the electric scooter|the brake pads|a used station wagon|the night bus|"
            "the flat tyre|the diesel engine|the charging cable|a cargo bike"
        ),
        _w("noisy|electric|rusty|reliable|second-hand|fuel-efficient|new"),
        _w(
            "at the garage|on the motorway|in the underground car park|outside the station|"
            "during rush hour"
        ),
        _w(
            "the warranty expired|fuel prices keep climbing|the dashboard showed a warning|"
            "the roads were icy"
        ),
    ),
    "animals": Topic(
        _w(
            "the veterinarian|a dog walker|the zookeeper|my sister|the shepherd|"
            "the wildlife photographer|the animal shelter"
        ),
        _w("feed|groom|rescue|adopt|vaccinate|follow|train"),
        _w(
            "the old sheepdog|a stray kitten|the herd of goats|the injured owl|"
            "a pair of rabbits|the pack of wolves|the parrot|a young horse"
        ),
        _w("shy|playful|hungry|wild|loyal|nervous|curious"),
        _w("in the back yard|at the edge of the forest|on the farm|at the shelter|near the river"),
        _w(
            "winter food is scarce|the fence was broken|the owners moved abroad|"
            "the animal was limping"
        ),
    ),
    "law": Topic(
        _w(
            "the judge|the defence lawyer|a city official|the landlord|the parliament|"
            "the tenant|the notary"
        ),
        _w("sign|appeal|amend|review|approve|challenge|enforce"),
        _w(
            "the rental contract|a new privacy law|the court ruling|the building permit|"
            "the tax reform|a parking fine|the employment agreement|the zoning plan"
        ),
        _w("unfair|binding|controversial|temporary|strict|vague|legal"),
        _w(
            "at the district court|before the election|in the town hall|within thirty days|"
            "behind closed doors"
        ),
        _w(
            "the wording was ambiguous|the public protested|the deadline had passed|"
            "new evidence appeared"
        ),
    ),
    "shopping": Topic(
        _w(
            "the customer|a fashion blogger|the shop assistant|my roommate|the online store|"
            "the tailor|a bargain hunter"
        ),
        _w("order|return|compare|wrap|exchange|discount|recommend"),
        _w(
            "a pair of running shoes|the winter coat|a leather wallet|"
            "the wireless headphones|a linen shirt|the coffee machine|a birthday present|"
            "the wool scarf"
        ),
        _w("cheap|stylish|durable|oversized|fashionable|faulty|elegant"),
        _w(
            "during the spring sale|at the shopping centre|on the website|"
            "at the corner shop|before Christmas"
        ),
        _w(
            "the size was wrong|the delivery took two weeks|the reviews were mixed|"
            "the price dropped yesterday"
        ),
    ),
}

TIMES = _w(
    "Yesterday|Every morning|Last winter|On Sunday|This year|Twice a week|"
    "Before lunch|Late at night|Next month|Sometimes"
)
LINKS = _w(
    "However|Meanwhile|As a result|In the end|Later|Surprisingly|For example|Still|"
    "Fortunately|In contrast"
)
OPINIONS = _w(
    "important|harder than expected|worth the effort|a common mistake|"
    "easy to forget|surprisingly cheap|a matter of patience"
)
